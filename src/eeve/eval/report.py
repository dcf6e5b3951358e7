"""``outputs/<run>/report.png``: bits per byte per language across the stages, against the base model.

x = training tokens since the start of the first stage; one panel per language; the solid line joins the
same-bytes measurements of the run (the expanded model at 0 when measured, validations inside stages, each
stage's export at its end); the dashed line is the base model (stage 0) on the same bytes; dotted verticals are
stage boundaries, labelled with the stage number. Rewritten after every stage.
"""
from __future__ import annotations

import os
from pathlib import Path

LANG_NAMES = {"ko": "Korean", "en": "English"}


def run_points(base: dict, stages: list[dict]) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, int, int]]]:
    """({lang: [(tokens, bpb)]}, [(stage, start_tokens, end_tokens)]) from stage metrics in schedule order."""
    points: dict[str, list[tuple[int, float]]] = {lang: [] for lang in base["eval"]["bpb"]}
    spans, offset = [], 0
    for m in stages:
        ev = m.get("eval")
        if not ev:
            offset += int(m.get("tokens", 0))
            continue
        for p in ev.get("series", []):
            for lang, v in p["bpb"].items():
                points.setdefault(lang, []).append((p["tokens"], v))
        end = offset + int(m.get("tokens", 0))
        for lang, r in ev["bpb"].items():
            points.setdefault(lang, []).append((end, r["bpb"]))
        spans.append((m["stage"], offset, end))
        offset = end
    return {k: sorted(v) for k, v in points.items()}, spans


def write_report(path: str | Path, base: dict, stages: list[dict], title: str = "") -> Path | None:
    """Draw the figure (see module docstring) to ``path`` (replaced in one rename); None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not base or "eval" not in base:
        return None
    points, spans = run_points(base, stages)
    langs = list(base["eval"]["bpb"])
    fig, axes = plt.subplots(1, len(langs), figsize=(6 * len(langs), 4.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        ref = base["eval"]["bpb"][lang]["bpb"]
        pts = points.get(lang, [])
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-o", color="C0" if lang != "en" else "C1", markersize=3.5, label="run (same bytes)")
            last = ys[-1]
            ax.annotate(f"{last:.3f} ({100 * (last / ref - 1):+.1f} % vs base)", (xs[-1], last),
                        textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=8)
        ax.axhline(ref, ls="--", color="gray", label=f"base {ref:.3f}")
        top = max([ref, *(y for _, y in pts)])
        low = min([ref, *(y for _, y in pts)])
        pad = 0.08 * (top - low or 1)
        ax.set_ylim(low - pad, top + 2 * pad)
        for number, start, end in spans:
            ax.axvline(end, ls=":", color="lightgray", lw=0.8)
            ax.text((start + end) / 2, top + pad, str(number), ha="center", va="bottom", fontsize=8, color="dimgray")
        ax.set_title(f"{LANG_NAMES.get(lang, lang)} held-out ({base['eval']['bpb'][lang]['bytes']:,} bytes)")
        ax.set_xlabel("training tokens since the start of the first stage (stage numbers on top)")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.legend(loc="upper right" if lang == "ko" else "lower left", fontsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 4))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
