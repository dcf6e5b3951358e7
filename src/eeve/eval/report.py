"""``outputs/<run>/report.png``: bits per byte per language across the stages, against the base model.

x = training tokens since the start of the first stage; one panel per language; the solid line joins the
same-bytes measurements of the run (the expanded model at 0 when measured, validations inside stages, each
stage's export at its end); the dashed line is the base model (stage 0) on the same bytes; dotted verticals are
stage boundaries, labelled with the stage number. Rewritten after every stage.
"""

from __future__ import annotations

from pathlib import Path

from eeve.io import atomic_write

LANG_NAMES = {
    "ko": "Korean",
    "en": "English",
    "ja": "Japanese",
    "zh": "Chinese",
    "zh-cn": "Chinese (simplified)",
    "zh-tw": "Chinese (traditional)",
    "hi": "Hindi",
    "ru": "Russian",
    "el": "Greek",
    "vi": "Vietnamese",
}
"""Panel titles for the language tags of data.validation (``lang``); any other tag is shown as written."""


def panel_title(lang: str, nbytes: int) -> str:
    """A panel's title: the language's name from its ``lang`` tag, and the bytes it is measured on."""
    return f"{LANG_NAMES.get(lang, lang)}: {nbytes:,} held-out bytes"


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
    from matplotlib.ticker import FuncFormatter

    if not base or "eval" not in base:
        return None
    points, spans = run_points(base, stages)
    langs = list(base["eval"]["bpb"])
    fig, axes = plt.subplots(1, len(langs), figsize=(6.2 * len(langs), 4.6), squeeze=False)
    for k_lang, (ax, lang) in enumerate(zip(axes[0], langs)):
        ref = base["eval"]["bpb"][lang]["bpb"]
        pts = points.get(lang, [])
        for k, (number, start, end) in enumerate(spans):  # stages as alternating bands, numbered on top
            if k % 2 == 0:
                ax.axvspan(start, end, color="0.93", lw=0)
            ax.text(
                (start + end) / 2,
                1.01,
                str(number),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
                color="dimgray",
            )
        ax.axhline(ref, ls="--", color="gray", label=f"base model, base tokenizer: {ref:.3f}")
        if pts:
            xs, ys = zip(*pts)
            ax.plot(
                xs,
                ys,
                "-o",
                color=f"C{k_lang}",
                markersize=3.5,
                label=f"expanded model, end: {ys[-1]:.3f} ({100 * (ys[-1] / ref - 1):+.1f} % vs base)",
            )
        ax.set_title(panel_title(lang, base["eval"]["bpb"][lang]["bytes"]), pad=16)
        ax.set_xlabel("training tokens since the first stage started (stage numbers on top)")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:,.0f}k" if x else "0"))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=8, frameon=False)
        ax.margins(x=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return path
