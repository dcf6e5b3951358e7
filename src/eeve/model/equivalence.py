"""Equivalence self-check: before a stage trains, the split training model must compute what its source computes.

On a few sequences made only of base-vocabulary tokens, the logits of the TRAINING path (``model.model`` ->
split head with the model's own output transform, exactly what the fused loss sees) over the old vocabulary are
compared with the plain HF model the stage starts from (stage 1: the base model before expansion; later stages:
the previous export, reloaded). They must agree to float tolerance. On a mismatch the error names the module that
differs: the input embedding (a forward that does more than the lookup the split reproduces), or the causal LM's
own forward between the final hidden state and the logits (a transform the split head does not reproduce).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eeve.errors import SplitError
from eeve.model.split import is_split

PROBE_TEXT = (
    "The committee met on Tuesday to review the budget for the coming year. Several members asked why the costs "
    "of maintenance had risen so quickly, and the treasurer explained that two of the older buildings needed new "
    "roofs. After a long discussion, they agreed to postpone the decision until the next meeting in March."
)
"""English prose: its base-tokenizer encoding has no new token, whatever the expansion."""


@dataclass
class Reference:
    """What the plain source model computes on the probe ids."""

    ids: torch.Tensor
    logits: torch.Tensor
    """[batch, seq, base_vocab] float32."""
    embeddings: torch.Tensor
    """Output of the source's input-embedding module, float32."""
    embedding_class: str
    model_class: str


def probe_ids(base_tokenizer, base_vocab_size: int, sequences: int = 2, length: int = 24) -> torch.Tensor:
    """[sequences, length] ids of :data:`PROBE_TEXT` under the base tokenizer (a ``tokenizers.Tokenizer``)."""
    ids = [i for i in base_tokenizer.encode(PROBE_TEXT, add_special_tokens=False).ids if i < base_vocab_size]
    need = sequences * length
    ids = (ids * (need // max(len(ids), 1) + 1))[:need]
    return torch.tensor(ids, dtype=torch.long).view(sequences, length)


@torch.no_grad()
def reference(model, ids: torch.Tensor, base_vocab_size: int) -> Reference:
    """Run the plain (unsplit) source model on ``ids``."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    ids = ids.to(dev)
    emb = model.get_input_embeddings()
    logits = model(input_ids=ids, use_cache=False).logits[..., :base_vocab_size].float()
    out = Reference(ids, logits, emb(ids).float(), type(emb).__name__, type(model).__name__)
    model.train(was_training)
    return out


@torch.no_grad()
def check(model, ref: Reference, where: str = "") -> float:
    """Compare the split ``model``'s training-path logits with ``ref``; returns the largest relative difference,
    raises SplitError (one line, naming the module) when it is beyond float tolerance for the model's dtype."""
    if not is_split(model):
        raise SplitError("equivalence check needs the split training model (eeve.model.split.split_vocab)")
    was_training = model.training
    model.eval()
    try:
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        ids = ref.ids.to(emb.old.weight.device)
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        logits = head.training_logits(hidden)[..., : ref.logits.shape[-1]].float()
        got_emb = emb(ids).float()
    finally:
        model.train(was_training)
    dtype = emb.old.weight.dtype
    tol = max(1e-4, 8 * torch.finfo(dtype).eps)
    prefix = f"{where}: " if where else ""
    err_emb = _rel(got_emb, ref.embeddings)
    if err_emb > tol:
        raise SplitError(
            f"{prefix}embed_tokens ({ref.embedding_class}) does more than a lookup: the split "
            f"embedding differs from it by {err_emb:.2g} (relative); this architecture is not supported"
        )
    err = _rel(logits, ref.logits)
    if err > tol:
        raise SplitError(
            f"{prefix}{ref.model_class}.forward transforms the head's output in a way the split head "
            f"does not reproduce: training-path logits differ from the model's by {err:.2g} (relative) "
            "on text without new tokens; this architecture is not supported"
        )
    return err


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
