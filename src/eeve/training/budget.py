"""A run's budget in tokens, text bytes or FLOPs, spread over the recipe's stages (``budget.*``).

Recipes are compared at equal compute: ``budget.flops=F`` gives every stage of the run ``F x share`` FLOPs and
turns that into the stage's ``max_tokens`` with the stage's own FLOPs per token (eeve.training.flops: stages 2 and
4 need no backward through the backbone, so the same FLOPs buy them more tokens). ``budget.bytes`` does the same
with the mixture's expected UTF-8 bytes per training token under the run's tokenizer (an expanded tokenizer reads
more text per token), ``budget.tokens`` with tokens as they are. Shares default to equal (``budget.shares``).

Under ``budget.flops`` the init pays first: ``mass_first_piece`` and ``distill`` run the base model over text
before stage 1 trains (eeve.training.flops counts it as the expanding stage's ``flops.init``), and the stages share
what is left. The first stage's own share is always set with the init method's planned passes (an upper bound:
its budget is fixed before the init runs, and a rerun must find the same one); later stages use what it recorded.

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
from eeve.model.init import get_init
from eeve.training.flops import Shape, init_flops, stage_flops_per_token


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
    pool = float(getattr(cfg.budget, kind))
    if kind == "flops":
        init = run_init_flops(cfg, expansion, name)
        if init >= pool:
            raise ConfigError(
                f"budget.flops={pool:.4g} does not cover init={cfg.init}'s {init:.4g} FLOPs over the base model: "
                "raise budget.flops or lower init_options.teacher_tokens"
            )
        pool -= init
    total = pool * stage_share(cfg.budget, name, [str(s) for s in cfg.stages])
    total = max(0.0, total - overspent_before(cfg, name, kind, pool))
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


def run_init_flops(cfg, expansion: dict, name: str | None = None) -> float:
    """The FLOPs of the run's init charged to the budget of stage ``name``: what the run's first stage (the one that
    expands) recorded as ``flops.init``; for that first stage itself, or before it has run, the init method's
    planned passes (its share is fixed before the init runs, so a rerun of a finished first stage computes the same
    ``max_tokens`` and finds its fingerprint unchanged; what the plan over-charged comes back to the next stage as
    under-spending); 0 for a run that does not expand."""
    if not cfg.recipe.expand:
        return 0.0
    first_name = str(cfg.stages[0])
    first = stage_dir(cfg, stage_number(cfg, first_name)) / "metrics.json"
    if first.is_file() and str(name) != first_name:
        return float((json.loads(first.read_text(encoding="utf-8")).get("flops") or {}).get("init") or 0)
    model = model_config_dict(cfg.model)
    base, vocab = expansion["base_vocab_size"], expansion["vocab_size"]
    passes = get_init(cfg.init).planned_passes(cfg.init_options, Shape.from_config(model).hidden, base, vocab - base)
    return float(init_flops(model, base, vocab, passes))


def overspent_before(cfg, name: str, kind: str, pool: float | None = None) -> float:
    """What the run's stages before ``name`` (in ``stages``) spent beyond their shares of ``pool`` (default: the
    budget), in the budget's unit, from their metrics.json (a stage without one counts as spending its share
    exactly)."""
    pool = float(getattr(cfg.budget, kind)) if pool is None else pool
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
            over += float(spent) - pool * stage_share(cfg.budget, earlier, stages)
    return over
