"""Loading the base model named by the ``model`` config (a local HF folder, or a seeded random-init debug Llama)."""

from __future__ import annotations

import os
from pathlib import Path

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


def looks_local(name_or_path: str) -> bool:
    """A filesystem path rather than a hub id (``namespace/name`` or ``name``): absolute, ``.``/``~``-relative, or
    more than one ``/``."""
    s = str(name_or_path)
    return os.path.isabs(s) or s.startswith((".", "~")) or s.count("/") > 1 or "\\" in s


def check_model_path(name_or_path: str | None) -> None:
    """A local model folder that does not exist stops with one line naming it (for the demo's pre-trained base,
    with the command that writes it); hub ids and existing folders pass."""
    if not name_or_path:
        return
    p = Path(os.path.expanduser(str(name_or_path)))
    if p.exists() or not looks_local(str(name_or_path)):
        return
    if p.name == "tiny_base" and p.parent.name == "demo":  # conf/model/tiny_pretrained.yaml
        fix = "create it with `python -m eeve.demo.tiny_base` (about 2½ minutes on 2 CPU cores)"
    else:
        fix = "give an existing Hugging Face model folder or a hub id (namespace/name)"
    raise ConfigError(f"model.name_or_path={str(name_or_path)!r} does not exist: {fix}")


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
        check_model_path(cfg.name_or_path)
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
