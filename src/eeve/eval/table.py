"""The run's table: the base (stage 0) and every stage on the same held-out bytes, with the change against the base.

Rows: ``0 (base)``, then ``1 start`` (the expanded model before training, when measured), then each stage's
export. FLOPs, cumulative over the rows' stages in order (training steps plus the init's passes over the base
model: eeve.layout.flops_spent; the ``start`` row stands after the init; "–" from the first stage that did not
record them; the column only when some row has them).
Per language: bits per byte and its change against the base in percent; characters per token and the share of
byte-fallback tokens (per language, ``ko / en``); one column per benchmark (its main metric); the parameter groups
the stage changed (measured from the weights).
"""

from __future__ import annotations

from dataclasses import dataclass

from eeve.eval.harness import main_metric
from eeve.layout import flops_spent


def _pct(v: float, ref: float | None) -> str:
    return "" if ref in (None, 0) else f" ({100 * (v / ref - 1):+.1f} %)"


def _flops(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def eval_table(results: list[dict], base: dict | None) -> str:
    """Markdown table of ``base`` (stage-0 metrics, may be None) and ``results`` (stage metrics with ``eval``).

    A row's ``stage`` may also be a label (``python -m eeve.evaluate`` names models by folder)."""
    rows = ([base] if base and "eval" in base else []) + [m for m in results if m.get("eval")]
    if not rows:
        return ""
    cols = _columns(rows, base)
    head = _header(rows, cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cum: float | None = 0.0  # training FLOPs so far
    for m in rows:
        cells, cum = _model_rows(m, m is base, cum, cols)
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


@dataclass
class _Columns:
    langs: list[str]
    ref: dict[str, float]  # the base's bits per byte per language (empty without a base)
    tasks: list[str]
    has_flops: bool


def _columns(rows: list[dict], base: dict | None) -> _Columns:
    langs = list(rows[0]["eval"]["bpb"])
    ref = {lang: base["eval"]["bpb"][lang]["bpb"] for lang in langs} if base and "eval" in base else {}
    tasks: list[str] = []
    for m in rows:
        tasks += [t for t in m["eval"].get("benchmarks", {}) if t not in tasks]
    return _Columns(langs, ref, tasks, any("flops" in m for m in rows))


def _header(rows: list[dict], cols: _Columns) -> list[str]:
    pair = " / ".join(cols.langs)
    head = (
        ["stage", "trained", "tokens"]
        + (["FLOPs (cumulative)"] if cols.has_flops else [])
        + [f"{lang} BPB (vs base)" for lang in cols.langs]
        + [f"chars/token {pair}", f"byte fallback {pair}"]
    )
    for t in cols.tasks:
        mm = next((main_metric(m["eval"]["benchmarks"][t]) for m in rows if t in m["eval"].get("benchmarks", {})), None)
        head.append(f"{t} {mm[0] if mm else ''}".strip())
    head.append("groups changed")
    return head


def _model_rows(m: dict, is_base: bool, cum: float | None, cols: _Columns) -> tuple[list[list], float | None]:
    """The rows of one model (its start, the expanded model before training, when measured; then its end), and
    the cumulative training FLOPs after it."""
    ev = m["eval"]
    out = []
    start = [p for p in ev.get("series", []) if p.get("step") == 0]
    init = float((m.get("flops") or {}).get("init") or 0)
    if start and not is_base:
        first = start[0]
        out.append(
            _cells(
                f"{m['stage']} start",
                "(expanded, untrained)",
                f"{first['tokens']:,}",
                _flops(None if cum is None else cum + init),
                first["bpb"],
                None,
                "",
                cols,
            )
        )
    spent = flops_spent(m)
    cum = None if cum is None or (spent is None and not is_base) else cum + (spent or 0)
    label = "0 (base)" if is_base else str(m["stage"])
    trained = "base model, base tokenizer" if is_base else "+".join(m.get("trainable", []))
    tokens = f"{m['tokens']:,}" if isinstance(m.get("tokens"), int) else ""
    groups = "" if is_base or "groups_changed" not in m else (", ".join(m["groups_changed"]) or "none")
    flops = "" if is_base else _flops(cum)
    bpb = {lang: r["bpb"] for lang, r in ev["bpb"].items()}
    out.append(_cells(label, trained, tokens, flops, bpb, ev, groups, cols))
    return out, cum


def _cells(label, trained, tokens, flops, bpb, ev, groups, cols: _Columns) -> list:
    langs = cols.langs
    cells = [label, trained, tokens] + ([flops] if cols.has_flops else [])
    cells += [
        f"{bpb[lang]:.3f}{_pct(bpb[lang], cols.ref.get(lang)) if label != '0 (base)' else ''}" if lang in bpb else "–"
        for lang in langs
    ]
    if ev is None:
        cells += ["", ""]
    else:
        cells.append(" / ".join(f"{ev['bpb'][lang]['chars_per_token']:.3f}" for lang in langs))
        cells.append(
            " / ".join(
                "–"
                if ev["bpb"][lang]["byte_fallback_share"] is None
                else f"{100 * ev['bpb'][lang]['byte_fallback_share']:.1f} %"
                for lang in langs
            )
        )
    bench = (ev or {}).get("benchmarks", {})
    for t in cols.tasks:
        mm = main_metric(bench[t]) if t in bench else None
        err = bench.get(t, {}).get(f"{mm[0]}_stderr") if mm else None
        cells.append("" if mm is None else f"{mm[1]:.3f}" + (f" ± {err:.3f}" if err is not None else ""))
    cells.append(groups)
    return cells
