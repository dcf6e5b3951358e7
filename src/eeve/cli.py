"""Command-line plumbing shared by train.py and tokenize.py: argument fix-ups Hydra needs, one-line errors, the
stage names found in conf/stage/ and their numbers as composed, and multirun job names. Hydra is imported inside
the functions that use it (start-up time: ``python -m eeve.evaluate`` uses ``fail`` only)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from eeve.config import register_configs, unknown_key_message

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
"""The repository's conf/ folder (the package is used from a checkout: `pip install -e .` or sys.path)."""


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def stage_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """Every stage config in conf/stage/ (`1` .. `7` and named variants such as `6_lowlr`), plus `all`."""
    names = sorted(
        (p.stem for p in (Path(conf_dir) / "stage").glob("*.yaml") if p.stem != "all"),
        key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n),
    )
    return names + ["all"]


def compose_stage_numbers(names: list[str]) -> dict[str, int]:
    """The ``number`` of each stage name, as Hydra composes conf/stage/<name>.yaml (a variant such as ``6_lora``
    inherits its stage's number through its defaults list). Hydra must be initialised: inside a ``@hydra.main``
    function, or under ``hydra.initialize_config_dir``."""
    from hydra import compose

    return {str(n): int(compose(config_name=f"stage/{n}").stage.number) for n in names}


RESOLVE_RUN_DIR = "paths.run_dir=${hydra:run.dir}"
"""Added to `--cfg ... --resolve`: no job runs then, so Hydra sets no hydra:runtime.output_dir for paths.run_dir;
the folder a run would write to stands in."""


def check_argv(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """`stage=3` as the user types it: Hydra parses 3 as an int, and group choices must be strings, so quote it.
    An unknown stage is reported in one line instead of Hydra's many. `--cfg job --resolve` gets paths.run_dir."""
    if (
        ("--cfg" in argv or "-c" in argv)
        and "--resolve" in argv
        and not any(a.startswith("paths.run_dir=") for a in argv)
    ):
        first = next((i for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), len(argv))
        argv = [*argv[:first], RESOLVE_RUN_DIR, *argv[first:]]  # among the overrides (argparse wants them together)
    out = []
    known = stage_names(conf_dir)
    for arg in argv:
        if arg.startswith("stage="):
            choices = [c.strip("'\"") for c in arg.split("=", 1)[1].split(",")]
            bad = [c for c in choices if c not in known]
            if bad:
                fail(f"stage={bad[0]} is unknown: choose one of {', '.join(known)} (conf/stage/*.yaml)")
            arg = "stage=" + ",".join(f"'{c}'" for c in choices)
        out.append(new_entry(arg))
    return out


NEW_ENTRY = re.compile(r"^\+(data\.sources|data\.validation)\.(\w[\w-]*)\.([\w.]+)=(.*)$", re.S)
"""`+data.validation.ja.paths=[FILE]`: a field of a new training source or validation set."""


def new_entry(arg: str) -> str:
    """`+data.validation.ja.paths=[FILE]` as the merge `+data.validation={ja:{paths:[FILE]}}`: OmegaConf cannot
    create a typed entry (ValConfig, SourceConfig) from the dotted form ("dict is not a subclass of ValConfig"),
    but merges a mapping into the typed dict, with the schema's defaults. Other arguments are returned unchanged."""
    m = NEW_ENTRY.match(arg)
    if not m or _top_level_comma(m.group(4)):  # a sweep (`-m ... =a,b`) stays as typed
        return arg
    group, name, field, value = m.groups()
    inner = value
    for part in reversed([name, *field.split(".")]):
        inner = f"{{{part}:{inner}}}"
    return f"+{group}={inner}"


def swept_name(task_overrides) -> str:
    """A multirun job's folder name from the values swept on the command line (`init=a,b` -> `init=a`)."""
    swept = {a.split("=", 1)[0].lstrip("+~") for a in sys.argv[1:] if "=" in a and "," in a.split("=", 1)[1]}
    parts = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return ",".join(parts).replace("/", "_").replace("'", "") or "job"


def hydra_error_line(e: Exception, schema) -> str:
    """Hydra's composition errors (several lines plus a HYDRA_FULL_ERROR hint) as one line with the fix."""
    import re

    text = str(e)
    m = re.search(r"Could not find '(?:(.+)/)?([^'/]+)'\s+Available options in '[^']*':\n((?:\t.*\n?)*)", text)
    if m:  # a misspelt group option (model=tiny_prertained): the options, the closest first
        return missing_option_line(m.group(1), m.group(2), m.group(3).split())
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        return unknown_key_message(m.group(1), schema)
    m = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    if m:  # a misspelt key inside a YAML file of conf/
        return f"config: Key '{m.group(1)}' not in '{m.group(2)}' (check the spelling of the key in conf/ or on the command line)"  # noqa: E501
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    cause = str(e.__cause__).splitlines()[0] if e.__cause__ is not None and str(e.__cause__) else ""
    return (
        (" ".join(lines[:2]) if lines else type(e).__name__)
        + (f": {cause}" if cause else "")
        + " (check the command line and conf/)"
    )


def missing_option_line(group: str | None, option: str, options: list[str]) -> str:
    """One line for `group=option` that conf/<group>/ does not have: did-you-mean and every option."""
    import difflib

    if not group:
        return f"config {option!r} not found (check --config-name and conf/)"
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return (
        f"{group}={option} is not an option: {hint}choose one of {', '.join(options) or '(none)'} (conf/{group}/*.yaml)"
    )


def run_hydra(main, schema) -> None:
    """Run a @hydra.main function with the schemas registered; composition errors become one line (exit 2)."""
    import os

    from hydra.errors import HydraException

    from eeve.console import plain_stderr

    plain_stderr()  # progress-bar redraws stay off logs (eeve.console)
    register_configs()
    # Hydra prints composition errors over several lines; have it raise instead, and report them in one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except HydraException as e:
        fail(hydra_error_line(e, schema))
    except BrokenPipeError:  # `python train.py --help | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error while exiting
        sys.exit(0)
    except ValueError as e:  # Hydra's command-line checks (--cfg with -m, ...)
        if "can be specified" not in str(e):
            raise
        fail(f"{e} (drop one of them)")
    except OSError as e:  # Hydra creates the run dir (and .hydra/, the log) before main() runs
        where = e.filename or "the run directory"
        fail(
            f"cannot write {where} ({e.strerror or type(e).__name__}): set hydra.run.dir=DIR (or run_name=NAME) "
            "to a writable folder"
        )


def single_lightning_log() -> None:
    """Lightning gives the `lightning` logger its own stderr handler and also lets it propagate to the root logger,
    which Hydra configures (console + <run_dir>/train.log): every Lightning message would print twice."""
    import logging

    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def _top_level_comma(value: str) -> bool:
    depth, quote = 0, None
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False
