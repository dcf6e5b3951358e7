"""What a recipe (``recipe=<name>``, conf/recipe/) needs before one of its stages runs.

The recipe's YAML sets the run's shape (stages, init, per-stage overrides, mixture); two things need work:
  - ``recipe.expand=false`` (no_expansion): the base model's own tokenizer, written as a tokenizer folder with no
    new tokens at ``tokenizer.path`` (eeve.tokenizer.identity), so the stages, evaluation and tables run unchanged;
  - a run budget (``budget.tokens|bytes|flops``): the stage's share of it, as ``stage.max_tokens``
    (eeve.training.budget).
"""

from __future__ import annotations

from pathlib import Path

from eeve.config import StageConfig, TrainConfig
from eeve.errors import ConfigError
from eeve.layout import resolve
from eeve.model.expand import read_expansion
from eeve.tokenizer.identity import write_identity_tokenizer
from eeve.training.budget import apply_budget


def base_tokenizer_path(cfg: TrainConfig) -> Path:
    """The base model's own tokenizer: ``model.tokenizer``, else the ``model.name_or_path`` folder."""
    src = cfg.model.tokenizer or cfg.model.name_or_path
    if not src:
        raise ConfigError(
            "recipe=no_expansion needs the base model's tokenizer: set model.tokenizer=PATH (a .model, "
            "tokenizer.json or HF folder)"
        )
    return resolve(src, cfg.paths.root)


def prepare_recipe(cfg: TrainConfig, name: str) -> StageConfig:
    """Write the no-expansion tokenizer when the recipe needs it; return the stage with the budget applied."""
    tok_dir = resolve(cfg.tokenizer.path, cfg.paths.root)
    if not cfg.recipe.expand:
        write_identity_tokenizer(base_tokenizer_path(cfg), tok_dir)
    if cfg.budget.kind() is None:
        return cfg.stage
    expansion = read_expansion(tok_dir)
    return apply_budget(cfg.stage, name, cfg, expansion, lambda: bytes_per_token(cfg, tok_dir))


def bytes_per_token(cfg: TrainConfig, tok_dir: Path) -> float:
    """Expected UTF-8 bytes per training token of the mixture under the run's tokenizer (packs the data if needed;
    the packed caches are the ones training reads)."""
    from eeve.data.datamodule import EEVEDataModule  # torch + data stack: only for budget.bytes

    root = Path(cfg.paths.root)
    dm = EEVEDataModule(cfg.data, tok_dir, resolve(cfg.paths.cache_dir, root), base_dir=root)
    return dm.bytes_per_token()
