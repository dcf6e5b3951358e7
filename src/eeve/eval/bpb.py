"""Bits per byte, characters per token and byte-fallback share of a model on given text, with its own tokenizer.

The one measurement every model of a run is compared by (the base with the base tokenizer, every stage export with
the expanded one), on the same documents (:mod:`eeve.eval.texts`):

  - each document is encoded alone with the model's tokenizer, without special tokens;
  - its tokens are cut into consecutive, non-overlapping windows of ``window - 1`` tokens, and each window is
    scored as ``[BOS] + window`` (EOS stands in where a tokenizer has no BOS): every text token is predicted
    exactly once, from the BOS and the tokens before it in its window only. No context crosses a window or a
    document boundary; BOS and EOS are never scored. The same rule applies to every model;
  - ``bpb = total nats / ln 2 / total UTF-8 bytes of the documents`` (bytes counted from the text, not from tokens:
    a SentencePiece ``▁`` prefix or a special token adds no bytes);
  - ``chars_per_token`` = characters of the documents / text tokens; ``byte_fallback_share`` = share of text tokens
    that are ``<0xNN>`` byte pieces (:meth:`eeve.tokenizer.kinds.TokenizerKind.is_byte_piece`; None when the
    tokenizer is not a kind this project knows).

Windows are sorted by length and batched up to ``batch_tokens`` padded tokens; padding goes to the right, so under
causal attention it never changes a real position. :func:`evaluate_bpb` works on a plain HF causal LM and on the
training module's split model (its fused head loss, ``eeve_losses``), also sharded: with ``world > 1`` every rank
scores its share of the batches (the same number of forward calls on each, as FSDP needs) and ``reduce`` sums the
totals over ranks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from eeve.errors import ConfigError, EvalError, TokenizerBuildError
from eeve.tokenizer.info import TokenizerInfo, tokenizer_info
from eeve.tokenizer.kinds import detect_kind

LN2 = math.log(2.0)
IGNORE = -100


def load_tokenizer(tokenizer) -> TokenizerInfo:
    """A :class:`eeve.tokenizer.info.TokenizerInfo` from one, or from a folder holding ``tokenizer.json``."""
    if isinstance(tokenizer, TokenizerInfo):
        return tokenizer
    try:
        return tokenizer_info(Path(tokenizer))
    except ConfigError:
        raise EvalError(f"{tokenizer} holds no tokenizer.json: evaluate a HF folder with a fast tokenizer") from None


def byte_piece_mask(info) -> np.ndarray | None:
    """bool[vocab]: which ids are byte-fallback pieces; None for a tokenizer kind this project does not know."""
    try:
        kind = detect_kind(info.spec, str(info.dir))
    except TokenizerBuildError:
        return None
    mask = np.zeros(info.padded_vocab_size, dtype=bool)
    for piece, i in info.spec["model"]["vocab"].items():
        if i < len(mask):
            mask[i] = kind.is_byte_piece(piece)
    return mask


def encode_windows(info, docs: list[str], window: int) -> tuple[list[list[int]], dict]:
    """The scoring rows (``[BOS] + up to window - 1 tokens``) of ``docs`` and the text statistics."""
    if window < 2:
        raise EvalError(f"eval.window={window}: a window needs at least 2 tokens (BOS + one scored token)")
    prefix = info.bos_id if info.bos_id is not None else info.eos_id
    if prefix is None:
        raise EvalError(f"tokenizer {info.dir} has neither a BOS nor an EOS token to start a window with")
    mask = byte_piece_mask(info)
    rows, n_tokens, n_byte_pieces = [], 0, 0
    step = window - 1
    for enc in info.tok.encode_batch(docs, add_special_tokens=False):
        ids = enc.ids
        n_tokens += len(ids)
        if mask is not None and ids:
            n_byte_pieces += int(mask[np.asarray(ids)].sum())
        rows.extend([prefix, *ids[a : a + step]] for a in range(0, len(ids), step))
    stats = {
        "documents": len(docs),
        "bytes": sum(len(d.encode("utf-8")) for d in docs),
        "chars": sum(len(d) for d in docs),
        "tokens": n_tokens,
        "windows": len(rows),
        "byte_pieces": n_byte_pieces if mask is not None else None,
    }
    return rows, stats


def make_batches(rows: list[list[int]], batch_tokens: int) -> list[list[int]]:
    """Row indices grouped (longest first) so that rows x longest row <= batch_tokens (at least one row each)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(rows[cur[0]]) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def token_nats(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss in nats (fp32, 0 where ``targets == IGNORE``), shape of ``targets``."""
    if hasattr(model, "eeve_losses"):  # the training module's split model: fused, chunked head loss
        _, per_token = model.eeve_losses(inputs, targets, False)
        return per_token.float().view(targets.shape)
    logits = model(input_ids=inputs, use_cache=False).logits
    flat, tgt = logits.flatten(0, 1), targets.flatten()
    out = torch.empty(tgt.shape, dtype=torch.float32, device=logits.device)
    step = max(1, (1 << 24) // logits.shape[-1])  # fp32 copies of at most 64 MB at a time
    for a in range(0, len(tgt), step):
        out[a : a + step] = torch.nn.functional.cross_entropy(
            flat[a : a + step].float(), tgt[a : a + step], ignore_index=IGNORE, reduction="none"
        )
    return out.view(targets.shape)


@torch.no_grad()
def score_rows(
    model,
    rows: list[list[int]],
    batch_tokens: int = 4096,
    *,
    rank: int = 0,
    world: int = 1,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Total nats of every row's tokens after its first, given the tokens before them in the row."""
    device = next(model.parameters()).device
    batches = make_batches(rows, batch_tokens)
    mine = batches[rank::world]
    calls = math.ceil(len(batches) / world)  # every rank runs the same number of forward calls (FSDP)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for k in range(calls):
            batch = mine[k] if k < len(mine) else batches[0]  # a spare call whose result is dropped
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, : len(rows[i])] = torch.tensor(rows[i])
            ids = ids.to(device)
            targets = ids[:, 1:]
            inputs = ids[:, :-1].clamp(min=0)  # right padding: causal attention keeps real positions exact
            nats = token_nats(model, inputs, targets).double().sum()
            if k < len(mine):
                total += nats
    finally:
        model.train(was_training)
    if reduce is not None:
        total = reduce(total)
    return float(total)


def evaluate_bpb(
    model,
    tokenizer,
    texts: dict[str, list[str]],
    window: int = 512,
    batch_tokens: int = 4096,
    *,
    rank: int = 0,
    world: int = 1,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, dict]:
    """Per language of ``texts``: ``bpb``, ``nats``, ``bytes``, ``chars``, ``tokens``, ``chars_per_token``,
    ``byte_fallback_share``, ``documents``, ``windows`` (see the module docstring for the rule).

    ``tokenizer``: the model's own tokenizer, as a folder with ``tokenizer.json`` or a ``TokenizerInfo``."""
    info = load_tokenizer(tokenizer)
    out = {}
    for lang, docs in texts.items():
        rows, st = encode_windows(info, docs, window)
        nats = score_rows(model, rows, batch_tokens, rank=rank, world=world, reduce=reduce)
        out[lang] = {
            "bpb": nats / LN2 / st["bytes"],
            "nats": nats,
            "bytes": st["bytes"],
            "chars": st["chars"],
            "tokens": st["tokens"],
            "chars_per_token": st["chars"] / max(st["tokens"], 1),
            "byte_fallback_share": None if st["byte_pieces"] is None else st["byte_pieces"] / max(st["tokens"], 1),
            "documents": st["documents"],
            "windows": st["windows"],
            "window": window,
        }
    return out
