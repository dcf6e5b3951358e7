"""Exact freezing by construction for the seven EEVE stages.

Old and new vocabulary rows live in SEPARATE parameters (``SplitEmbedding.old/.new``, ``SplitLMHead.old/.new``),
so a stage's optimizer only ever sees the tensors it trains: no gradient hooks (which do not fire on FSDP2
DTensors and see local shard row indices), no AdamW decoupled weight decay on "frozen" rows, no Adam state for
them, and old and new blocks can be separate FSDP units (src/eeve/distributed.py). Build a NEW optimizer per stage from
``[p for p in model.parameters() if p.requires_grad]`` after ``set_trainable`` (moments carried from a previous
stage would keep moving rows that are now frozen).

Groups: ``old_input``, ``new_input``, ``old_output``, ``new_output``, ``transformer`` (= everything else: decoder
layers and the final norm).

For training, ``hidden = model.model(input_ids).last_hidden_state`` then ``model.lm_head(hidden, targets)``:
the head's matmul and the cross-entropy fused and chunked over tokens (``SplitHeadCrossEntropy``), so no
[tokens x vocab] logit tensor is kept for backward. ``model(input_ids)`` still returns full-vocabulary logits.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Mapping

import torch
from torch import nn

from eeve.errors import SplitError
from eeve.model.fused_ce import SplitHeadCrossEntropy

log = logging.getLogger(__name__)

_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(weight)
    return lin


def _embedding(weight: torch.Tensor, padding_idx: int | None = None) -> nn.Embedding:
    emb = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=padding_idx, device="meta")
    emb.weight = nn.Parameter(weight)
    return emb


class SplitEmbedding(nn.Module):
    """Input embedding with old rows ``[0, base)`` in ``old`` and new rows ``[base, V)`` in ``new``, times the
    original module's ``scale`` (Gemma's ``embed_scale`` = sqrt(hidden); 1.0 for a plain lookup), applied the way
    Gemma does: the scale cast to the weights' dtype."""

    def __init__(self, old: nn.Embedding, new: nn.Embedding, scale: float = 1.0, original: str = "Embedding"):
        super().__init__()
        self.old = old
        self.new = new
        self.base_vocab_size = old.num_embeddings
        self.num_embeddings = old.num_embeddings + new.num_embeddings
        self.embedding_dim = old.embedding_dim
        self.scale = float(scale)
        self.original = original
        """Class name of the module this replaced (named in equivalence errors)."""
        object.__setattr__(self, "_restore", None)  # the original module without its weight (see merge_vocab)

    @property
    def padding_idx(self) -> int | None:
        if self.old.padding_idx is not None:
            return self.old.padding_idx
        if self.new.padding_idx is not None:
            return self.new.padding_idx + self.base_vocab_size
        return None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = self.base_vocab_size
        if self.new.num_embeddings == 0:  # no new rows (recipe=no_expansion): a plain lookup
            out = self.old(input_ids)
        else:
            is_new = input_ids >= base
            old = self.old(input_ids.clamp(max=base - 1))
            new = self.new((input_ids - base).clamp(min=0))
            out = torch.where(is_new.unsqueeze(-1), new, old)
        if self.scale != 1.0:
            out = out * torch.tensor(self.scale, dtype=torch.float32, device=out.device).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"base={self.base_vocab_size}, total={self.num_embeddings}, dim={self.embedding_dim}" + (
            f", scale={self.scale:g}" if self.scale != 1.0 else ""
        )


class SplitLMHead(nn.Module):
    """Bias-free output head with old rows in ``old`` and new rows in ``new``; returns full-vocabulary logits.

    ``logit_scale`` and ``softcap`` are what the model's own forward does to the head's output (Granite divides by
    ``logits_scaling``, Cohere multiplies by ``logit_scale``, Gemma 2/3 soft-cap with ``final_logit_softcapping``):
    ``forward(hidden)`` returns the RAW logits (the HF forward applies them itself), the fused training loss and
    :meth:`training_logits` apply them."""

    def __init__(self, old: nn.Linear, new: nn.Linear, logit_scale: float = 1.0, softcap: float | None = None):
        super().__init__()
        self.old = old
        self.new = new
        self.base_vocab_size = old.out_features
        self.in_features = old.in_features
        self.out_features = old.out_features + new.out_features
        self.logit_scale = float(logit_scale)
        self.softcap = float(softcap) if softcap else None
        object.__setattr__(self, "_restore", None)

    def training_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits exactly as the fused training loss computes them (scale and soft-cap applied)."""
        return transform_logits(torch.cat([self.old(hidden), self.new(hidden)], dim=-1), self.logit_scale, self.softcap)

    chunk_elements = 1 << 25
    """Logit elements per chunk of the fused loss (tokens per chunk = this / vocab size): 128 MB of fp32."""

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor | None = None, ignore_index: int = -100):
        """Full-vocabulary logits (what HF's forward expects); with `targets`, the fused chunked cross-entropy:
        (mean loss, per-token losses) — see SplitHeadCrossEntropy. Called through forward so FSDP2 gathers the
        head's weights around it."""
        if targets is None:
            return torch.cat([self.old(hidden), self.new(hidden)], dim=-1)
        w_old, w_new = self.old.weight, self.new.weight
        grad = torch.is_grad_enabled()
        need = (grad and hidden.requires_grad, grad and w_old.requires_grad, grad and w_new.requires_grad)
        chunk = max(1, self.chunk_elements // self.out_features)
        return SplitHeadCrossEntropy.apply(
            hidden, w_old, w_new, targets, chunk, ignore_index, need, self.logit_scale, self.softcap
        )

    def extra_repr(self) -> str:
        return (
            f"base={self.base_vocab_size}, total={self.out_features}, in={self.in_features}"
            + (f", logit_scale={self.logit_scale:g}" if self.logit_scale != 1.0 else "")
            + (f", softcap={self.softcap:g}" if self.softcap else "")
        )


# What a causal LM's forward does to the head's output, read from its (text) config: attribute -> how.
_LOGIT_SCALE_ATTRS = {"logits_scaling": lambda v: 1.0 / v, "logit_scale": lambda v: v}


def head_transform(config) -> tuple[float, float | None]:
    """(logit scale, soft-cap) the model's forward applies to the head's output, from its config."""
    get = getattr(config, "get_text_config", None)
    cfg = get() if callable(get) else config
    scale = 1.0
    for attr, how in _LOGIT_SCALE_ATTRS.items():
        v = getattr(cfg, attr, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v not in (0, 1):
            scale *= float(how(v))
    cap = getattr(cfg, "final_logit_softcapping", None)
    return scale, (float(cap) if cap else None)


def embedding_scale(emb: nn.Module) -> float:
    """The factor an input-embedding module multiplies its lookup by (1.0 for nn.Embedding itself). Known
    attributes are read (Gemma: ``scalar_embed_scale`` / ``embed_scale``); for any other subclass with its own
    forward the module is probed on a few ids, and refused unless its output is a constant multiple of the lookup."""
    for attr in ("scalar_embed_scale", "embed_scale"):
        v = getattr(emb, attr, None)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type != "meta":
            return float(v.float().item())
    if type(emb).forward is nn.Embedding.forward:
        return 1.0
    w = emb.weight
    if w.device.type == "meta":
        raise SplitError(
            f"cannot tell what {type(emb).__name__}.forward does on the meta device; split a model "
            "with real weights first"
        )
    ids = torch.arange(min(8, w.shape[0]), device=w.device)
    with torch.no_grad():
        out, look = emb(ids).float(), w[ids].float()
    c = float((out * look).sum() / (look * look).sum().clamp_min(1e-30))
    if not torch.allclose(out, look * c, rtol=1e-3, atol=1e-6 * float(out.abs().max())):
        raise SplitError(
            f"input embedding ({type(emb).__name__}) does more than a lookup times a constant: "
            "this architecture cannot be split"
        )
    return c


def transform_logits(logits: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """The model's own output transform: ``cap * tanh(scale * logits / cap)`` (each part only when set)."""
    if scale != 1.0:
        logits = logits * scale
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits


def is_split(model) -> bool:
    return isinstance(model.get_input_embeddings(), SplitEmbedding) and isinstance(
        model.get_output_embeddings(), SplitLMHead
    )


def split_vocab(model, base_vocab_size: int):
    """Replace the input embedding and lm_head by split modules in place (idempotent); returns the model."""
    if is_split(model):
        if model.get_input_embeddings().base_vocab_size != base_vocab_size:
            raise SplitError("model is already split at a different base_vocab_size")
        return model
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise SplitError("split_vocab needs a bias-free lm_head")
    if head.weight is emb.weight:
        raise SplitError("input and output embeddings are tied; untie them first (eeve.model.expand.untie_embeddings)")
    V = emb.weight.shape[0]
    if not 0 < base_vocab_size <= V or head.weight.shape[0] != V:
        raise SplitError(f"cannot split {V} rows (lm_head {head.weight.shape[0]}) at base_vocab_size={base_vocab_size}")
    pad = emb.padding_idx
    W = emb.weight.detach()
    s_emb = SplitEmbedding(
        _embedding(W[:base_vocab_size].clone(), pad if pad is not None and pad < base_vocab_size else None),
        _embedding(
            W[base_vocab_size:].clone(), pad - base_vocab_size if pad is not None and pad >= base_vocab_size else None
        ),
        scale=embedding_scale(emb),
        original=type(emb).__name__,
    )
    Wo = head.weight.detach()
    scale, cap = head_transform(model.config)
    s_head = SplitLMHead(_linear(Wo[:base_vocab_size].clone()), _linear(Wo[base_vocab_size:].clone()), scale, cap)
    # merge_vocab puts the original module classes back (a Gemma embedding keeps its scaling after merging)
    object.__setattr__(s_emb, "_restore", _emptied(emb))  # not a submodule: no parameters, not in state dicts
    object.__setattr__(s_head, "_restore", _emptied(head))
    model.set_input_embeddings(s_emb)
    model.set_output_embeddings(s_head)
    return model


def _emptied(module: nn.Module) -> nn.Module:
    """A shallow copy of the module without its weight (the split model holds no second copy of the matrix)."""
    out = copy.copy(module)
    out._parameters = {k: (None if k == "weight" else v) for k, v in module._parameters.items()}
    out._buffers, out._modules = dict(module._buffers), dict(module._modules)
    return out


def merge_vocab(model):
    """Turn a split model back into a standard HF model in place (plain nn.Embedding / nn.Linear); returns it."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if isinstance(emb, SplitEmbedding):
        W = torch.cat([emb.old.weight.detach(), emb.new.weight.detach()], 0)
        model.set_input_embeddings(
            _refill(emb._restore, W) if emb._restore is not None else _embedding(W, emb.padding_idx)
        )
    if isinstance(head, SplitLMHead):
        W = torch.cat([head.old.weight.detach(), head.new.weight.detach()], 0)
        model.set_output_embeddings(_refill(head._restore, W) if head._restore is not None else _linear(W))
    return model


def with_weight(module: nn.Module, weight: torch.Tensor, requires_grad: bool = True) -> nn.Module:
    """A shallow copy of ``module`` holding ``weight`` (any number of rows): the same class, buffers and settings,
    so that whatever its forward does besides the lookup (Gemma 3's ``embed_scale``) survives a resize."""
    out = _refill(_emptied(module), weight)
    out.weight.requires_grad_(requires_grad)
    return out


def _refill(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    module.weight = nn.Parameter(weight)
    if hasattr(module, "num_embeddings"):
        module.num_embeddings = weight.shape[0]
    if hasattr(module, "out_features"):
        module.out_features = weight.shape[0]
    return module


def _clean(name: str) -> str:
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


_GROUP_RE = re.compile(r"(?:^|\.)(embed_tokens|wte|embed_in|word_embeddings|lm_head|embed_out)\.(old|new)\.weight$")
_UNSPLIT_RE = re.compile(r"(?:^|\.)(embed_tokens|wte|embed_in|word_embeddings|lm_head|embed_out)\.weight$")
_INPUT_NAMES = {"embed_tokens", "wte", "embed_in", "word_embeddings"}


def merge_split_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Standard-HF state dict from a split one: ``X.old.weight`` + ``X.new.weight`` -> ``X.weight`` (rows
    concatenated), for the embedding/head names; wrapper parts (``_checkpoint_wrapped_module.``, ``_orig_mod.``)
    removed; DTensors gathered with ``full_tensor()``. Other keys pass through unchanged (no copies)."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state_dict.items():
        if hasattr(v, "full_tensor"):
            v = v.full_tensor()
        k = _clean(k)
        m = _GROUP_RE.search(k)
        if m:
            stem = k[: -len(f".{m.group(2)}.weight")]
            pending.setdefault(stem, {})[m.group(2)] = v
        else:
            out[k] = v
    for stem, parts in pending.items():
        if set(parts) != {"old", "new"}:
            raise SplitError(f"split state dict has {stem}.{'/'.join(parts)} but not both old and new")
        out[stem + ".weight"] = torch.cat([parts["old"], parts["new"]], 0)
    return out
