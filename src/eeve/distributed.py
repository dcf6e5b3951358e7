"""FSDP2 sharding of the split model (torchtitan style).

Units: every decoder layer; the old and the new embedding rows (separate, so a stage that freezes one never
reduces or keeps gradient buffers for it); the head (old and new rows together: every forward needs both for the
softmax normaliser, and the fused loss reads both weights inside the head's forward); the backbone (final norm);
the root, around the module's `eeve_losses` forward method. FSDP2 keeps no gradient for frozen parameters, so a
frozen old block in a mixed unit costs only its all-gather. Mixed precision: parameters are gathered in `param_dtype` (bf16 on GPUs), gradients are
reduce-scattered in fp32, and the sharded master weights the optimizer updates stay fp32.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in backward instead of storing its activations."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    layers = model.model.layers
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)


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
