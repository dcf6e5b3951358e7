"""Compare training runs (recipes) at equal compute: one markdown table and one plot.

    python -m eeve.compare outputs/eeve outputs/full outputs/no_expansion [--out DIR] [--names a,b,c]
    python -m eeve.compare outputs/demo/multirun            # a Hydra sweep: one run per job folder

Each RUN_DIR is a run folder (``outputs/<run>/`` with ``stage<N>/metrics.json``; ``stage0`` = the base model) or a
multirun sweep folder (numbered job folders, each a run named by its folder). Prints the table
(eeve.eval.comparison: bits per byte per language on the same bytes and against the base, cumulative FLOPs, tokens
and text bytes, characters per token) and writes ``DIR/compare.png`` (eeve.eval.comparison_plot: bits per byte
against cumulative FLOPs, one panel per language) and ``DIR/compare.md`` (the table). ``--out`` defaults to
``outputs/compare``; ``--names`` renames the runs in order (as many names as runs after expanding sweeps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eeve.cli import fail
from eeve.errors import EEVEError, EvalError
from eeve.eval.comparison import comparison_table, find_runs, load_run
from eeve.eval.comparison_plot import write_comparison_plot


def collect(folders: list[str], names: str | None = None) -> list:
    """The runs of ``folders`` (sweeps expanded), named by folder or by ``names`` (comma-separated)."""
    found = []
    for f in folders:
        runs = find_runs(Path(f))
        found += [(d, d.name if len(runs) > 1 else (Path(f).resolve().name)) for d in runs]
    if names:
        given = [n.strip() for n in names.split(",")]
        if len(given) != len(found):
            raise EvalError(
                f"--names gives {len(given)} names for {len(found)} runs "
                f"({', '.join(n for _, n in found)}): give one name per run"
            )
        found = [(d, n) for (d, _), n in zip(found, given)]
    return [load_run(d, n) for d, n in found]


def compare(folders: list[str], out: Path, names: str | None = None) -> tuple[str, Path | None]:
    """The table of the runs in ``folders``, written to ``out/compare.md`` with the plot ``out/compare.png``."""
    runs = collect(folders, names)
    table = comparison_table(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table + "\n", encoding="utf-8")
    return table, write_comparison_plot(out / "compare.png", runs, "bits per byte against FLOPs (init and training)")


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m eeve.compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or multirun sweep folders")
    p.add_argument("--out", default="outputs/compare", help="folder for compare.png and compare.md")
    p.add_argument("--names", default=None, help="comma-separated run names, one per run after expanding sweeps")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = Path(args.out)
        table, png = compare(args.runs, out, args.names)
    except (EEVEError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(table)
    print(f"\nplot: {png}\ntable: {out / 'compare.md'}")
    return table


if __name__ == "__main__":
    main()
