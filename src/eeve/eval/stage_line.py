"""The one line printed when a stage ends: each language's bits per byte against the base, and the guard's status.

    stage 3 done: ko 1.932 (-19.4 % vs base) en 1.774 (+0.9 %); guard held

Figures come from the stage's metrics: the same-bytes evaluation of its export against the base's (stage 0), or,
with ``eval.enabled=false``, its last validation against the start of the stage.
"""

from __future__ import annotations


def _bpb(values: dict) -> dict[str, float]:
    return {lang: float(v["bpb"]) for lang, v in values.items() if isinstance(v, dict) and v.get("bpb") is not None}


def _guard(m: dict) -> str:
    g = m.get("guard")
    if not g:
        return "no guard"
    if not g.get("breached"):
        return "guard held"
    b = g["breach"]
    return (
        f"guard stopped it: {b['lang']} {b['vs_base']:+.1%} vs base at step {b['step']}, "
        f"exported step {g['exported_step']}"
    )


def stage_done_line(m: dict, base: dict | None) -> str:
    """The line for stage metrics ``m`` (metrics.json) and the base's metrics ``base`` (stage 0; may be None)."""
    if m.get("eval"):
        now, ref, what = _bpb(m["eval"]["bpb"]), _bpb((base or {}).get("eval", {}).get("bpb", {})), "vs base"
    else:
        now, ref, what = _bpb(m.get("val_end", {})), _bpb(m.get("val_start", {})), "vs stage start"
    parts = []
    for i, (lang, v) in enumerate(now.items()):
        r = ref.get(lang)
        change = f" ({100 * (v / r - 1):+.1f} %{' ' + what if i == 0 else ''})" if r else ""
        parts.append(f"{lang} {v:.3f}{change}")
    return f"stage {m['stage']} done: {' '.join(parts) or 'no validation'}; {_guard(m)}"
