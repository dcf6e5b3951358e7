"""Export a (split or standard) model as a standard Hugging Face folder, atomically.

``export_hf(model_or_config, state_dict, tokenizer_dir, out_dir, metrics)`` writes ``save_pretrained`` output
(safetensors, untied, vocab = expanded tokenizer) + the tokenizer files + ``metrics.json`` into a temporary folder
beside ``out_dir`` and renames it into place only when complete. An existing export is moved aside, the new one
renamed in, and the old one deleted; any failure before that leaves the old export untouched and removes the
temporary folder.

FSDP path: pass the model CONFIG and a full (split-format or standard) state dict; the HF model is built on the
meta device and the state dict's tensors are assigned into it (``load_state_dict(assign=True)``), so weights are
not copied (only the two vocabulary matrices are concatenated).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from eeve.errors import ExportError
from eeve.io import atomic_dir
from eeve.model.split import merge_split_state_dict

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "expansion.json")
# transformers 5 no longer writes special_tokens_map.json; copied when present
OPTIONAL_TOKENIZER_FILES = ("special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "added_tokens.json")


def _json_default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"metrics value of type {type(o).__name__} is not JSON serialisable")


def _align_keys(sd: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip a common leading prefix (e.g. ``model.`` of a LightningModule attribute) if that makes keys match."""
    keys = set(sd)
    if keys == expected:
        return dict(sd)
    first = next(iter(sd))
    parts = first.split(".")
    for n in range(1, len(parts)):
        pre = ".".join(parts[:n]) + "."
        if all(k.startswith(pre) for k in keys) and {k[len(pre) :] for k in keys} == expected:
            return {k[len(pre) :]: v for k, v in sd.items()}
    missing, extra = sorted(expected - keys)[:5], sorted(keys - expected)[:5]
    raise ExportError(f"state dict keys do not match the model: missing e.g. {missing}, unexpected e.g. {extra}")


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def export_hf(
    model_or_config,
    state_dict: Mapping[str, torch.Tensor] | None,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    metrics: dict | None = None,
    *,
    max_shard_size: str | int = "5GB",
    extras: Sequence[Callable[[Path, Mapping[str, torch.Tensor]], None]] = (),
) -> Path:
    """Write a loadable HF folder to ``out_dir`` (atomically); returns ``out_dir``.

    ``model_or_config``: a (split or standard) ``PreTrainedModel`` -- its own state dict is used when
    ``state_dict`` is None -- or a ``PretrainedConfig`` together with a full ``state_dict`` (split or merged
    format; a common prefix like ``model.`` is stripped). The model passed in is not modified. Each of
    ``extras`` is called as ``extra(folder, standard_state_dict)`` to add files (adapter, delta) to the export
    before it is renamed into place."""
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    for f in TOKENIZER_FILES:
        if not (tokenizer_dir / f).exists():
            raise ExportError(f"{tokenizer_dir / f} missing: tokenizer_dir must be an expanded tokenizer folder")
    config, state_dict = _config_and_state(model_or_config, state_dict)
    sd = merge_split_state_dict(state_dict)
    model = _meta_model(config)
    sd = _align_keys(sd, set(model.state_dict().keys()))
    vocab = _check_vocab(sd, config, tokenizer_dir)
    model.load_state_dict(sd, strict=True, assign=True)
    dtypes = {v.dtype for v in sd.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.config.dtype = dtypes.pop()

    with atomic_dir(out_dir) as tmp:  # the previous export stays in place until the new one is complete
        written = dict(sd)  # save_pretrained empties the dict it is given (it pops each tensor once written)
        model.save_pretrained(str(tmp), state_dict=sd, safe_serialization=True, max_shard_size=max_shard_size)
        _copy_tokenizer(tokenizer_dir, tmp)
        for extra in extras:
            extra(tmp, written)
        text = json.dumps(metrics or {}, indent=2, sort_keys=True, default=_json_default)
        (tmp / "metrics.json").write_text(text + "\n", encoding="utf-8")
    log.info("exported HF model (vocab %d) to %s", vocab, out_dir)
    return out_dir


def _config_and_state(model_or_config, state_dict):
    """(a private copy of the config, with the KV cache on; the state dict to export)."""
    from transformers import PretrainedConfig

    if isinstance(model_or_config, PretrainedConfig):
        config = model_or_config
        if state_dict is None:
            raise ExportError("export_hf(config, state_dict=None): a config needs a full state dict")
    else:
        config = model_or_config.config
        if state_dict is None:
            state_dict = model_or_config.state_dict()
    config = config.__class__.from_dict(config.to_dict())  # private copy
    if hasattr(config, "use_cache"):  # training turns the KV cache off; an export generates with it
        config.use_cache = True
    return config, state_dict


def _check_vocab(sd: Mapping[str, torch.Tensor], config, tokenizer_dir: Path) -> int:
    """The vocabulary rows of the state dict: as the config says, and at least the tokenizer's tokens."""
    from tokenizers import Tokenizer

    vocab = (
        sd[next(k for k in sd if k.endswith("embed_tokens.weight") or k.endswith("wte.weight"))].shape[0]
        if any(k.endswith(("embed_tokens.weight", "wte.weight")) for k in sd)
        else config.vocab_size
    )
    if vocab != config.vocab_size:
        raise ExportError(f"state dict has {vocab} vocabulary rows but config.vocab_size={config.vocab_size}")
    n_tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    if vocab < n_tok:
        raise ExportError(f"model has {vocab} vocabulary rows but the tokenizer in {tokenizer_dir} has {n_tok} tokens")
    if vocab > n_tok:
        log.warning("model has %d rows, tokenizer %d tokens: %d padding rows", vocab, n_tok, vocab - n_tok)
    return vocab


def _copy_tokenizer(tokenizer_dir: Path, folder: Path) -> None:
    for f in TOKENIZER_FILES + OPTIONAL_TOKENIZER_FILES:
        if (tokenizer_dir / f).exists():
            shutil.copy2(tokenizer_dir / f, folder / f)
    if (tokenizer_dir / "base_tokenizer").is_dir():
        shutil.copytree(tokenizer_dir / "base_tokenizer", folder / "base_tokenizer")
