"""The comparison figure: bits per byte against cumulative FLOPs (the init and the training steps), one panel per
validation language.

One line per run (recipe), a marker at each stage's end (the stage number next to it), the validations inside a
stage on the line between; the base model on the same bytes as a dashed horizontal line (one per distinct base).
x is logarithmic. Values that are not on the same bytes as the base (evaluation off) are drawn dotted.
"""

from __future__ import annotations

import os
from pathlib import Path

from eeve.eval.comparison import Run, base_bpb, languages


def _line(run: Run, lang: str) -> tuple[list[float], list[float], list[tuple[float, float, int]]]:
    """(xs, ys) of the run's line for ``lang`` and its stage-end markers (x, y, stage)."""
    xs, ys, marks = [], [], []
    for p in run.points:
        if p.flops is None or p.flops <= 0 or lang not in p.bpb:
            continue
        for x, bpb in p.series:
            if x > 0 and lang in bpb:
                xs.append(x)
                ys.append(bpb[lang])
        xs.append(p.flops)
        ys.append(p.bpb[lang])
        marks.append((p.flops, p.bpb[lang], p.stage))
    return xs, ys, marks


def write_comparison_plot(path: str | Path, runs: list[Run], title: str = "") -> Path:
    """Draw the figure (see the module docstring) to ``path`` (PNG, replaced in one rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = languages(runs)
    fig, axes = plt.subplots(1, max(1, len(langs)), figsize=(6.4 * max(1, len(langs)), 4.8), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        bases: dict[float, list[str]] = {}
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            xs, ys, marks = _line(run, lang)
            if xs:
                same = all(p.same_bytes for p in run.points)
                ax.plot(xs, ys, ":" if not same else "-", color=color, lw=1.4, label=f"{run.name} ({run.recipe})")
                ax.plot([m[0] for m in marks], [m[1] for m in marks], "o", color=color, ms=5)
                for x, y, stage in marks:
                    ax.annotate(str(stage), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color=color)
            ref = base_bpb(run).get(lang)
            if ref is not None:
                bases.setdefault(round(ref, 6), []).append(run.name)
        for k, (ref, names) in enumerate(bases.items()):
            who = "" if len(bases) == 1 else f" ({', '.join(names)})"
            ax.axhline(ref, ls="--", color="gray" if k == 0 else f"0.{4 + k % 5}", lw=1, label=f"base{who}: {ref:.4f}")
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs, cumulative over the run's init and stages (log)")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.set_title(f"{lang}: same held-out bytes for every run")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
