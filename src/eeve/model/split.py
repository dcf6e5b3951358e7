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
    """Input embedding with old rows ``[0, base)`` in ``old`` and new rows ``[base, V)`` in ``new``."""

    def __init__(self, old: nn.Embedding, new: nn.Embedding):
        super().__init__()
        self.old = old
        self.new = new
        self.base_vocab_size = old.num_embeddings
        self.num_embeddings = old.num_embeddings + new.num_embeddings
        self.embedding_dim = old.embedding_dim

    @property
    def padding_idx(self) -> int | None:
        if self.old.padding_idx is not None:
            return self.old.padding_idx
        if self.new.padding_idx is not None:
            return self.new.padding_idx + self.base_vocab_size
        return None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = self.base_vocab_size
        is_new = input_ids >= base
        old = self.old(input_ids.clamp(max=base - 1))
        new = self.new((input_ids - base).clamp(min=0))
        return torch.where(is_new.unsqueeze(-1), new, old)

    def extra_repr(self) -> str:
        return f"base={self.base_vocab_size}, total={self.num_embeddings}, dim={self.embedding_dim}"


class SplitLMHead(nn.Module):
    """Bias-free output head with old rows in ``old`` and new rows in ``new``; returns full-vocabulary logits."""

    def __init__(self, old: nn.Linear, new: nn.Linear):
        super().__init__()
        self.old = old
        self.new = new
        self.base_vocab_size = old.out_features
        self.in_features = old.in_features
        self.out_features = old.out_features + new.out_features

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
        return SplitHeadCrossEntropy.apply(hidden, w_old, w_new, targets, chunk, ignore_index, need)

    def extra_repr(self) -> str:
        return f"base={self.base_vocab_size}, total={self.out_features}, in={self.in_features}"


def is_split(model) -> bool:
    return isinstance(model.get_input_embeddings(), SplitEmbedding) and isinstance(
        model.get_output_embeddings(), SplitLMHead)


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
    if not 0 < base_vocab_size < V or head.weight.shape[0] != V:
        raise SplitError(f"cannot split {V} rows (lm_head {head.weight.shape[0]}) at base_vocab_size={base_vocab_size}")
    pad = emb.padding_idx
    W = emb.weight.detach()
    s_emb = SplitEmbedding(
        _embedding(W[:base_vocab_size].clone(), pad if pad is not None and pad < base_vocab_size else None),
        _embedding(W[base_vocab_size:].clone(), pad - base_vocab_size if pad is not None and pad >= base_vocab_size else None),
    )
    Wo = head.weight.detach()
    s_head = SplitLMHead(_linear(Wo[:base_vocab_size].clone()), _linear(Wo[base_vocab_size:].clone()))
    model.set_input_embeddings(s_emb)
    model.set_output_embeddings(s_head)
    return model


def merge_vocab(model):
    """Turn a split model back into a standard HF model in place (plain nn.Embedding / nn.Linear); returns it."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if isinstance(emb, SplitEmbedding):
        W = torch.cat([emb.old.weight.detach(), emb.new.weight.detach()], 0)
        model.set_input_embeddings(_embedding(W, emb.padding_idx))
    if isinstance(head, SplitLMHead):
        W = torch.cat([head.old.weight.detach(), head.new.weight.detach()], 0)
        model.set_output_embeddings(_linear(W))
    return model


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
