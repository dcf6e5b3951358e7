"""FSDP2 sharding of the split model (torchtitan style).

Units: every decoder layer; the old and the new embedding rows (separate, so a stage that freezes one never
reduces or keeps gradient buffers for it); the head (old and new rows together: every forward needs both for the
softmax normaliser, and the fused loss reads both weights inside the head's forward); the backbone (final norm);
the root, around the module's `eeve_losses` forward method. FSDP2 keeps no gradient for frozen parameters, so a
frozen old block in a mixed unit costs only its all-gather. Mixed precision: parameters are gathered in `param_dtype`
(bf16 on GPUs), gradients are
reduce-scattered in fp32, and the sharded master weights the optimizer updates stay fp32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from eeve.model.split import split_vocab


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in backward instead of storing its activations."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    layers = model.model.layers
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)


def skeleton_like(full: nn.Module | None, base_vocab_size: int) -> nn.Module:
    """The split model on the meta device, built from rank 0's config (broadcast): no weights held in memory.
    On rank 0 `full` is the split model with the stage's starting weights; elsewhere None."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    box = [None if full is None else (full.config, next(full.parameters()).dtype)]
    dist.broadcast_object_list(box, src=0)
    config, dtype = box[0]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    split_vocab(model, base_vocab_size)
    return model


def load_from_rank0(model: nn.Module, full: nn.Module | None, device: torch.device) -> None:
    """Materialise the sharded skeleton on `device` and fill it from rank 0's full weights, each rank receiving
    only its shards (torchtitan's pattern): host memory holds one full copy on rank 0, not one per rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model.to_empty(device=device)
    for mod in model.modules():  # non-persistent buffers (rotary inv_freq) are not in any state dict: rebuild
        if hasattr(mod, "inv_freq") and hasattr(mod, "config"):
            fresh = type(mod)(mod.config)
            for name, buf in fresh.named_buffers(recurse=False):
                getattr(mod, name).copy_(buf.to(device))
    sd = {} if full is None else {k.replace("._checkpoint_wrapped_module", ""): v for k, v in full.state_dict().items()}
    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def shard_model(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype) -> None:
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kw = dict(mesh=mesh, mp_policy=mp)
    backbone = model.model
    for layer in backbone.layers:
        fully_shard(layer, **kw)
    fully_shard(backbone.embed_tokens.old, **kw)
    fully_shard(backbone.embed_tokens.new, **kw)
    fully_shard(model.lm_head, **kw)
    fully_shard(backbone, **kw)  # final norm
    fully_shard(model, **kw)  # root
    # The LightningModule calls model.eeve_losses (backbone + fused head loss), not model.forward.
    register_fsdp_forward_method(model, "eeve_losses")
