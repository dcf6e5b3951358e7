"""Loading the base model named by the ``model`` config (a local HF folder, or a seeded random-init debug Llama)."""

from __future__ import annotations

import torch

from eeve.config import ModelConfig, to_object
from eeve.errors import ConfigError, ExpansionError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise ConfigError(f"model.dtype={name!r} not supported; use float32 or bfloat16") from None


def load_base_model(cfg: ModelConfig | dict, seed: int = 0):
    """Load the base causal LM described by ``cfg``.

    ``name_or_path`` set: ``AutoModelForCausalLM.from_pretrained`` with safetensors only and ``trust_remote_code``
    only when the config asks. Otherwise ``LlamaForCausalLM(LlamaConfig(**cfg.config))`` initialised under
    ``torch.manual_seed(seed)`` (same seed -> same weights). Embeddings are not untied here (see ``expand_model``).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg = to_object(ModelConfig, cfg)
    dtype = torch_dtype(cfg.dtype)
    if cfg.name_or_path:
        return AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path, dtype=dtype, trust_remote_code=bool(cfg.trust_remote_code), use_safetensors=True
        )
    if not cfg.config:
        raise ExpansionError("model.name_or_path is null and model.config is empty; give one of them")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**dict(cfg.config)))
    model = model.to(dtype)
    model.config.dtype = dtype
    return model
