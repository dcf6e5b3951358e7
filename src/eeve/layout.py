"""The run layout: where a run's folders are and which stage follows which.

``<run_dir>/stage<N>/`` holds stage N's export and metrics (``stage0``: the base model's evaluation). A stage starts
from the export of the stage before it in ``stages`` (the first one: the expanded base), unless ``init_from`` names
other weights. Stage names map to numbers through ``TrainConfig.stage_numbers``, which train.py fills when it
composes the config (eeve.cli.compose_stage_numbers), so a variant such as ``6_lora`` counts as stage 6.
"""

from __future__ import annotations

import json
from pathlib import Path

from eeve.config import TrainConfig
from eeve.errors import ConfigError, StageError


def resolve(path: str | Path, root: str | Path) -> Path:
    """``path`` itself if absolute (``~`` expanded), else relative to ``root``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def stage_dir(cfg: TrainConfig, number: int) -> Path:
    return Path(cfg.paths.run_dir) / f"stage{number}"


def stage_number(cfg: TrainConfig, name: str) -> int:
    """The number of the stage config ``name``: as composed (``stage_numbers``), else the name itself (``"3"``)."""
    return number_of(name, cfg.stage_numbers)


def number_of(name: str, numbers: dict[str, int]) -> int:
    """``numbers[name]``, else the name itself when it is a number; a one-line ConfigError otherwise."""
    name = str(name)
    if name in numbers:
        return int(numbers[name])
    if name.isdigit():
        return int(name)
    raise ConfigError(
        f"stage {name!r} has no known number: run it through train.py (which records stage_numbers when it "
        f"composes the config), or set +stage_numbers.{name}=N"
    )


def stage_order(cfg: TrainConfig) -> list[int]:
    """The numbers of the stages ``stage=all`` runs (``cfg.stages``), in order."""
    return [stage_number(cfg, name) for name in cfg.stages]


def stages_before(cfg: TrainConfig, number: int) -> list[int]:
    """The stages before ``number`` in the schedule (``cfg.stages``); for a stage not listed, the lower numbers."""
    numbers = stage_order(cfg)
    return numbers[: numbers.index(number)] if number in numbers else [n for n in numbers if n < number]


def previous_stage(cfg: TrainConfig, number: int) -> int | None:
    """The number of the stage before ``number`` in the schedule; None for the first stage."""
    earlier = stages_before(cfg, number)
    return earlier[-1] if earlier else None


def metrics_before(cfg: TrainConfig, number: int) -> list[dict]:
    """metrics.json of the stages before ``number`` in the schedule (``stages:``), in order, where they exist."""
    paths = [stage_dir(cfg, n) / "metrics.json" for n in stages_before(cfg, number)]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def flops_spent(metrics: dict) -> float | None:
    """The FLOPs a finished stage spent (its metrics.json; None where it recorded none): its training steps plus,
    in the stage that expanded the model, the init's passes over the base model (eeve.training.flops)."""
    f = metrics.get("flops") or {}
    return None if f.get("train") is None else float(f["train"]) + float(f.get("init") or 0)


def stage_source(cfg: TrainConfig, number: int, check: bool = True) -> Path | None:
    """The exported model stage ``number`` starts from (None: the expanded base); checked to exist unless
    ``check`` is false."""
    prev = previous_stage(cfg, number)
    src = resolve(cfg.init_from, cfg.paths.root) if cfg.init_from else (None if prev is None else stage_dir(cfg, prev))
    if check and src is not None and not (src / "config.json").is_file():
        hint = f"run `python train.py stage={prev}` first (or stage=all)" if not cfg.init_from else "fix init_from"
        raise StageError(f"stage {number} starts from {src}, which holds no exported model: {hint}")
    return src
