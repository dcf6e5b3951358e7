"""Typed training configuration. The YAML under conf/ is merged onto these dataclasses, so a misspelt key in a
config file or on the command line fails at start-up instead of being silently ignored."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from eeve.data import DataConfig
from eeve.expansion import ModelConfig
from eeve.param_groups import GROUPS


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the problem and the fix."""


@dataclass
class StageConfig:
    number: int = 1
    """Stage 1..7 of the EEVE schedule (0 in stage/all.yaml = run 1..7 in sequence)."""
    trainable: list[str] = field(default_factory=list)
    """Parameter groups this stage trains: old_input, new_input, old_output, new_output, transformer."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    weight_decay: float = 0.1
    """Decoupled AdamW weight decay; touches trainable rows only (frozen rows are not optimizer parameters)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 5
    """Linear warm-up, in optimizer steps."""
    max_steps: int = 60
    """Optimizer steps in this stage (ignored when max_tokens is set)."""
    max_tokens: Optional[int] = None
    """Token budget of the stage; overrides max_steps as ceil(max_tokens / tokens per step)."""


@dataclass
class TrainerConfig:
    strategy: str = "single"
    """single | ddp | fsdp (FSDP2 through Lightning's ModelParallelStrategy)."""
    accelerator: str = "auto"
    devices: str | int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    """Lightning precision for single/ddp. Under fsdp, mixed precision comes from param_dtype."""
    param_dtype: str = "float32"
    """fsdp: dtype of the unsharded parameters in forward/backward; gradients are reduced in fp32."""
    accumulate_grad_batches: int = 1
    gradient_clip: float = 1.0
    """Max global gradient norm over the trainable parameters; 0 disables clipping."""
    log_every_n_steps: int = 5
    val_every_n_steps: int = 30
    checkpoint_every_n_steps: int = 20
    keep_checkpoints: int = 2
    deterministic: bool = True


@dataclass
class TokenizerConfig:
    path: str = "outputs/tokenize/demo/tokenizer"
    """Expanded tokenizer folder written by tokenize.py (holds expansion.json and base_tokenizer/)."""


@dataclass
class PathsConfig:
    root: str = "."
    run_dir: str = "outputs/demo"
    cache_dir: str = ".cache"


@dataclass
class LoggerConfig:
    name: str = "tensorboard"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "demo"
    seed: int = 1234
    init: str = "mean_subwords"
    """New-row initialisation at expansion: mean_subwords (EEVE) | mean | mean_cov | random."""
    init_from: Optional[str] = None
    """Weights to start the stage from (an HF folder); None = the previous stage's export (stage 1: expanded base)."""
    resume: str = "auto"
    """auto = continue this stage from its newest good checkpoint; never; or a checkpoint path."""
    overwrite: bool = False
    """Re-train a stage whose export already exists (otherwise it is skipped)."""
    schedule: dict[str, Any] = field(default_factory=dict)
    """Per-stage overrides {"<N>": {lr: ..., max_tokens: ...}} applied on top of conf/stage/<N>.yaml."""


INIT_METHODS = ("mean_subwords", "mean", "mean_cov", "random")


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Merge the composed Hydra config onto the schema (resolving interpolations) and check the values."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("experiment", None)
    plain.pop("hydra", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), plain)
    except Exception as e:  # omegaconf's messages are multi-line; keep the first line
        first = str(e).splitlines()[0]
        raise ConfigError(f"config: {first} (check the spelling of the key in conf/ or on the command line)") from None
    out: TrainConfig = OmegaConf.to_object(merged)
    bad = [g for g in out.stage.trainable if g not in GROUPS]
    if bad:
        raise ConfigError(f"stage.trainable has unknown group(s) {bad}: choose from {list(GROUPS)}")
    if out.stage.number not in range(0, 8):
        raise ConfigError(f"stage={out.stage.number} is outside 1-7: use stage=1 .. stage=7, or stage=all")
    if out.init not in INIT_METHODS:
        raise ConfigError(f"init={out.init} is unknown: choose one of {', '.join(INIT_METHODS)}")
    if out.trainer.strategy not in ("single", "ddp", "fsdp"):
        raise ConfigError(f"trainer.strategy={out.trainer.strategy} is unknown: use trainer=default, trainer=ddp or trainer=fsdp")
    return out
