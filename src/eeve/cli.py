"""Command-line plumbing for train.py: argument fix-ups Hydra needs, one-line errors, multirun job names."""
from __future__ import annotations

import sys

STAGES = [str(n) for n in range(1, 8)] + ["all"]


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def check_argv(argv: list[str]) -> list[str]:
    """`stage=3` as the user types it: Hydra parses 3 as an int, and group choices must be strings, so quote it.
    An unknown stage is reported in one line instead of Hydra's many."""
    out = []
    for arg in argv:
        if arg.startswith("stage="):
            choices = arg.split("=", 1)[1].split(",")
            bad = [c for c in choices if c.strip("'\"") not in STAGES]
            if bad:
                fail(f"stage={bad[0]} is outside 1-7: use stage=1 .. stage=7, or stage=all")
            arg = "stage=" + ",".join(f"'{c.strip(chr(39) + chr(34))}'" for c in choices)
        out.append(arg)
    return out


def swept_name(task_overrides) -> str:
    """A multirun job's folder name from the values swept on the command line (`init=a,b` -> `init=a`)."""
    swept = {a.split("=", 1)[0].lstrip("+~") for a in sys.argv[1:] if "=" in a and "," in a.split("=", 1)[1]}
    parts = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return ",".join(parts).replace("/", "_").replace("'", "") or "job"


def schema_keys() -> list[str]:
    """Every dotted key of the training config schema (for 'did you mean')."""
    import dataclasses

    from eeve.config import TrainConfig

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            t = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            yield prefix + f.name
            if dataclasses.is_dataclass(t):
                yield from walk(t, prefix + f.name + ".")

    return list(walk(TrainConfig, ""))


def hydra_error_line(e: Exception) -> str:
    """Hydra's composition errors (several lines plus a HYDRA_FULL_ERROR hint) as one line with the fix."""
    import difflib
    import re

    text = str(e)
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        keys, leaf = schema_keys(), key.rpartition(".")[2]
        siblings = [k for k in keys if k.rpartition(".")[0] == key.rpartition(".")[0]]
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.8)
        if not close:  # the same name under another group (trainer.max_steps -> stage.max_steps)
            by_leaf = {k.rpartition(".")[2]: k for k in keys if "." in k}
            close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)]
        hint = f"did you mean '{close[0]}'?" if close else "check its spelling (python train.py --cfg job lists the keys)"
        return f"unknown config key '{key}' on the command line: {hint}"
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return (" ".join(lines[:2]) if lines else type(e).__name__) + " (check the command line and conf/)"


def single_lightning_log() -> None:
    """Lightning gives the `lightning` logger its own stderr handler and also lets it propagate to the root logger,
    which Hydra configures (console + <run_dir>/train.log): every Lightning message would print twice."""
    import logging

    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
