"""A run's budget in tokens, text bytes or FLOPs, spread over the recipe's stages (``budget.*``).

Recipes are compared at equal compute: ``budget.flops=F`` gives every stage of the run ``F x share`` FLOPs and
turns that into the stage's ``max_tokens`` with the stage's own FLOPs per token (eeve.training.flops: stages 2 and
4 need no backward through the backbone, so the same FLOPs buy them more tokens). ``budget.bytes`` does the same
with the mixture's expected UTF-8 bytes per training token under the run's tokenizer (an expanded tokenizer reads
more text per token), ``budget.tokens`` with tokens as they are. Shares default to equal (``budget.shares``).

A stage trains whole steps, so it spends a little more than its share; the next stage of the run gets that much
less (what the earlier stages' metrics.json record against their shares), so the run as a whole ends within one
step of its budget instead of one step per stage over it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from eeve.config import BudgetConfig, StageConfig
from eeve.errors import ConfigError
from eeve.layout import stage_dir, stage_number
from eeve.training.flops import stage_flops_per_token


def stage_share(budget: BudgetConfig, name: str, stages: list[str]) -> float:
    """The fraction of the run's budget that stage ``name`` gets (``budget.shares``, missing names weigh 1)."""
    weights = {str(s): float(budget.shares.get(str(s), 1.0)) for s in stages}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"budget.shares {dict(budget.shares)} must be >= 0 with a positive sum over {stages}")
    return weights[str(name)] / sum(weights.values())


def model_config_dict(model_cfg) -> dict:
    """The base model's HF config as a dict (its config.json, or the debug model's ``model.config``)."""
    if model_cfg.name_or_path:
        p = Path(model_cfg.name_or_path) / "config.json"
        if not p.is_file():
            raise ConfigError(
                f"model.name_or_path {model_cfg.name_or_path!r} has no config.json: fix model.name_or_path"
            )
        return json.loads(p.read_text())
    return dict(model_cfg.config)


def apply_budget(stage: StageConfig, name: str, cfg, expansion: dict, bytes_per_token=None) -> StageConfig:
    """``stage`` with ``max_tokens`` set from the run's budget (unchanged when no budget is set).
    ``bytes_per_token``: a callable giving the mixture's expected bytes per token (only called for budget.bytes)."""
    kind = cfg.budget.kind()
    if kind is None:
        return stage
    total = float(getattr(cfg.budget, kind)) * stage_share(cfg.budget, name, [str(s) for s in cfg.stages])
    total = max(0.0, total - overspent_before(cfg, name, kind))
    if kind == "tokens":
        tokens = total
    elif kind == "bytes":
        tokens = total / float(bytes_per_token())
    else:
        per = stage_flops_per_token(
            model_config_dict(cfg.model),
            stage.trainable,
            expansion["base_vocab_size"],
            expansion["vocab_size"],
            cfg.data.seq_len,
            adapter=(stage.adapter, dataclasses.asdict(stage.lora)),
        )["per_token"]
        tokens = total / per
    return dataclasses.replace(stage, max_tokens=max(1, int(tokens)))


SPENT = {"tokens": ("tokens",), "bytes": ("text_bytes",), "flops": ("flops", "train")}  # metrics.json keys


def overspent_before(cfg, name: str, kind: str) -> float:
    """What the run's stages before ``name`` (in ``stages``) spent beyond their shares of the budget, in the
    budget's unit, from their metrics.json (a stage without one counts as spending its share exactly)."""
    stages = [str(s) for s in cfg.stages]
    if str(name) not in stages:
        return 0.0
    over = 0.0
    for earlier in stages[: stages.index(str(name))]:
        p = stage_dir(cfg, stage_number(cfg, earlier)) / "metrics.json"
        spent = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
        for key in SPENT[kind]:
            spent = spent.get(key) if isinstance(spent, dict) else None
        if spent is not None:
            over += float(spent) - float(getattr(cfg.budget, kind)) * stage_share(cfg.budget, earlier, stages)
    return over
