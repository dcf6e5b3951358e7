"""LoRA / QLoRA adapters for the ``transformer`` group (PEFT), and merging them into standard weights at export.

``stage.adapter=lora``: every linear layer of the decoder layers named in ``stage.lora.target_modules`` gets a
LoRA adapter (``peft.inject_adapter_in_model``: in place, so the model keeps its class and its split embedding and
head); the stage's ``transformer`` group then means the adapter (eeve.training.groups), while the embedding and
head groups keep their exact split-row training in the same stage. ``stage.adapter=qlora`` first replaces those
linear layers by bitsandbytes 4-bit (NF4) ones; it needs CUDA.

Order matters, and eeve.training.module follows it: build (or the FSDP meta skeleton) -> :func:`attach_adapter`
-> ``set_trainable`` (injection freezes everything else) -> activation checkpointing -> sharding -> load.

At export the adapter is merged: W' = W + (alpha / rank) * B @ A, computed in fp32 on the full state dict (the
gathered one under FSDP) and cast back to W's dtype; 4-bit base weights are dequantized first, so the export is
the model the stage validated, not a re-quantized one. The export is a plain HF model; with ``export.adapter=true``
the adapter is also saved as a PEFT folder (``stage<N>/adapter/``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from eeve.config import GROUPS, LoraSettings, StageConfig
from eeve.errors import ConfigError
from eeve.model.split import _INPUT_NAMES, _UNSPLIT_RE

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"  # PEFT's adapter name: its tensors are "<module>.lora_A.default.weight"
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names tensors in adapter_model.safetensors


# ------------------------------------------------------------------------------------------------ configuration
def require_qlora() -> None:
    """One-line ConfigError unless this machine can run ``stage.adapter=qlora`` (CUDA and bitsandbytes); checked
    when a qlora stage starts (eeve.training.stages), the settings themselves by ``StageConfig.check_adapter``."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "stage.adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit weights) and this machine has "
            "none: use stage.adapter=lora"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("stage.adapter=qlora needs bitsandbytes: pip install -e '.[qlora]'") from None


def target_regex(names: list[str]) -> str:
    """PEFT target (a full-match regex over module names): the named linear layers inside decoder layers only, so
    the split embedding and head (whose ``old``/``new`` are linear layers too) are never adapted."""
    return r".*\.layers\.\d+\.(?:.*\.)?(?:" + "|".join(re.escape(n) for n in names) + ")"


def peft_config(lora: LoraSettings, base_model: str | None = None):
    from peft import LoraConfig

    return LoraConfig(
        r=int(lora.rank),
        lora_alpha=float(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=target_regex(list(lora.target_modules)),
        bias="none",
        base_model_name_or_path=base_model,
    )


# ---------------------------------------------------------------------------------------------------- training
def attach_adapter(model: nn.Module, stage: StageConfig, seed: int, device: torch.device | str | None = None):
    """Inject the stage's adapter in place (nothing for ``adapter=none``) and return the model. The adapter's
    initialisation depends only on ``seed``, so a single process and rank 0 of an FSDP run start alike; on a meta
    skeleton (FSDP ranks > 0) the adapter is meta too and receives rank 0's values with the rest. ``qlora``
    quantizes the targeted layers onto ``device`` first (CUDA; the caller checked)."""
    if stage.adapter == "none":
        return model
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import cast_adapter_dtype

    on_meta = next(model.parameters()).is_meta
    if stage.adapter == "qlora" and not on_meta:
        quantize_targets(model, list(stage.lora.target_modules), torch.device(device or "cuda"))
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            inject_adapter_in_model(peft_config(stage.lora), model, adapter_name=ADAPTER_NAME)
        except ValueError as e:  # PEFT: "Target modules ... not found in the base model"
            raise ConfigError(
                f"stage.lora.target_modules={list(stage.lora.target_modules)} matches no linear layer "
                f"inside the decoder layers ({str(e).splitlines()[0][:120]})"
            ) from None
    # bf16 / fp16 adapters train poorly; PEFT's own get_peft_model keeps them in fp32 the same way.
    cast_adapter_dtype(model, ADAPTER_NAME, autocast_adapter_dtype=True)
    n = sum(p.numel() for name, p in model.named_parameters() if ".lora_" in name)
    log.info(
        "%s adapter: rank %d, alpha %g on %s: %s parameters",
        stage.adapter,
        stage.lora.rank,
        stage.lora.alpha,
        ",".join(stage.lora.target_modules),
        f"{n:,}",
    )
    return model


def quantize_targets(model: nn.Module, names: list[str], device: torch.device) -> int:
    """Replace the targeted linear layers by bitsandbytes NF4 ``Linear4bit`` holding the quantized weights on
    ``device`` (compute in the weights' own dtype); returns how many were replaced."""
    import bitsandbytes as bnb

    pattern = re.compile(target_regex(names))
    count = 0
    for name, mod in list(model.named_modules()):
        if type(mod) is not nn.Linear or not pattern.fullmatch(name):
            continue
        q = bnb.nn.Linear4bit(
            mod.in_features,
            mod.out_features,
            bias=mod.bias is not None,
            compute_dtype=mod.weight.dtype,
            quant_type="nf4",
            device="meta",
        )
        q.weight = bnb.nn.Params4bit(mod.weight.data, requires_grad=False, quant_type="nf4", module=q).to(device)
        if mod.bias is not None:
            q.bias = nn.Parameter(mod.bias.data.to(device), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q)
        count += 1
    return count


# ------------------------------------------------------------------------------------------------------ export
def adapted_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict of an unsharded adapted model with 4-bit base weights dequantized to their original dtype
    (bitsandbytes' quantization-state entries dropped): plain tensors that :func:`merge_adapter` can merge."""
    sd = dict(model.state_dict())
    for name, mod in model.named_modules():
        w = mod._parameters.get("weight")  # the module's own (a LoRA wrapper's .weight is its base layer's)
        if getattr(w, "quant_state", None) is None:
            continue
        from bitsandbytes.functional import dequantize_4bit

        key = f"{name}.weight"
        for k in [k for k in sd if k.startswith(key + ".")]:
            del sd[k]
        sd[key] = dequantize_4bit(w.data, w.quant_state).to(w.quant_state.dtype)
    return sd


def merge_adapter(sd: Mapping[str, torch.Tensor], lora: LoraSettings) -> dict[str, torch.Tensor]:
    """Standard (adapter-free) state dict from an adapted one: ``W + (alpha/rank) * B @ A`` in fp32, cast back to
    W's dtype; ``lora_*`` tensors dropped and ``.base_layer.`` taken out of the names."""
    scaling = float(lora.alpha) / int(lora.rank)
    out = {}
    for k, v in sd.items():
        if ".lora_" in k:
            continue
        if ".base_layer." in k:
            stem, _, leaf = k.partition(".base_layer.")
            if leaf == "weight":
                a, b = sd[f"{stem}.lora_A.{ADAPTER_NAME}.weight"], sd[f"{stem}.lora_B.{ADAPTER_NAME}.weight"]
                v = (v.float() + scaling * (b.float() @ a.float())).to(v.dtype)
            k = f"{stem}.{leaf}"
        out[k] = v
    return out


def prepare_export(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor] | None,
    stage: StageConfig,
    save_adapter: bool,
    base_model: str | None,
) -> tuple[Mapping[str, torch.Tensor] | None, list[Callable]]:
    """What the stage export writes: (the state dict for ``export_hf`` -- the adapter merged --, extra writers
    for the export folder). ``sd``: the gathered full state dict under FSDP, else None (read from ``model``).
    Without an adapter both pass through unchanged. ``base_model`` is what the PEFT folder names as its base."""
    if stage.adapter == "none":
        return sd, []
    adapted = adapted_state_dict(model) if sd is None else dict(sd)
    merged = merge_adapter(adapted, stage.lora)
    extras = []
    if save_adapter:
        row_groups = [g for g in stage.trainable if g in GROUPS and g != "transformer"]
        extras.append(
            lambda tmp, final_sd: save_peft_folder(
                Path(tmp) / "adapter", adapted, final_sd, stage.lora, row_groups, base_model
            )
        )
    return merged, extras


def save_peft_folder(
    folder: Path,
    adapted: Mapping[str, torch.Tensor],
    final_sd: Mapping[str, torch.Tensor],
    lora: LoraSettings,
    row_groups: list[str],
    base_model: str | None,
) -> None:
    """The adapter as PeftModel.save_pretrained writes it (adapter_config.json + adapter_model.safetensors).
    When the stage also trained embedding or head rows, the trained matrices go in too (PEFT's
    ``save_embedding_layers``), so ``PeftModel.from_pretrained(<the stage's starting model>, folder)`` is the
    stage's model."""
    from safetensors.torch import save_file

    tensors = {
        PEFT_PREFIX + k.replace(f".{ADAPTER_NAME}.", "."): v.contiguous() for k, v in adapted.items() if ".lora_" in k
    }
    sides = {"input" if g.endswith("input") else "output" for g in row_groups}
    for k, v in final_sd.items():
        m = _UNSPLIT_RE.search(k)
        if m and ("input" if m.group(1) in _INPUT_NAMES else "output") in sides:
            tensors[PEFT_PREFIX + k] = v.contiguous()
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_config(lora, base_model).save_pretrained(str(folder))
