"""The base model as teacher for initialising new rows (used by ``mass_first_piece`` and ``distill``).

Alignment: a document is encoded by the base and by the expanded tokenizer (BOS/EOS as the data packing adds
them). A position is *aligned* when both tokenizations have a token boundary at the same byte offset (byte
lengths per token from the tokenizer kind, so byte-level pieces that split a character are exact); there the
base model, having read the base pieces, and the expanded model, having read the new tokens, have seen the same
bytes and should predict the same continuation. The teacher pass runs the base model once over the sample and
keeps, at aligned positions only, its final hidden state, the normaliser of its logits, and the next token of
the expanded tokenization.

Each function that runs the model or multiplies matrices records what it ran as *passes* (``stats["passes"]``):
``{"what", "groups", "tokens", "seq", "head"}`` for a pass through the backbone (the groups that carry a gradient,
tokens, the effective positions per sequence for attention, which head block it computes at every position:
"none", "base" or "expanded"), or ``{"what", "flops"}`` for plain matrix products. eeve.training.flops turns them
into FLOPs, so that an init that reads text is charged against a run's FLOP budget like a stage.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from eeve.errors import ExpansionError
from eeve.lr_schedule import warmup_cosine

log = logging.getLogger(__name__)

TEACHER_CHUNK = 256
"""Base tokens per sequence of the teacher pass."""


@dataclass
class Chunk:
    """Documents packed into one sequence for both tokenizers, with their aligned positions."""

    base_ids: list[int]
    exp_ids: list[int]
    base_pos: list[int]
    exp_pos: list[int]
    """Aligned positions: base_ids[:base_pos[k] + 1] and exp_ids[:exp_pos[k] + 1] cover the same bytes."""


@dataclass
class TeacherSample:
    chunks: list[Chunk]
    hidden: torch.Tensor
    """[N, H] float32: the base model's final hidden state at each aligned position (chunk order)."""
    next_ids: torch.Tensor
    """[N] the expanded tokenizer's next token at that position (-1: none, e.g. the end of a chunk)."""
    log_z_old: torch.Tensor
    """[N] logsumexp of the base's logits (the model's output transform applied) over the base vocabulary."""
    first_logp: torch.Tensor
    """[N, F] the base's log-probability of each family's first piece (F = distinct first pieces of new tokens)."""
    chunk_of: torch.Tensor
    """[N] index of the chunk each aligned position belongs to."""
    stats: dict = field(default_factory=dict)
    passes: list[dict] = field(default_factory=list)
    """What building the sample ran (see the module docstring)."""


def aligned_positions(
    base_ids: list[int], exp_ids: list[int], base_bytes: np.ndarray, exp_bytes: np.ndarray
) -> tuple[list[int], list[int]]:
    """Index pairs (base, expanded) of the last token of each byte offset that both tokenizations end a token at."""
    cb = np.cumsum(base_bytes[np.asarray(base_ids, dtype=np.int64)])
    ce = np.cumsum(exp_bytes[np.asarray(exp_ids, dtype=np.int64)])
    last_b = {int(v): i for i, v in enumerate(cb)}  # later indices overwrite: the last token ending there
    last_e = {int(v): i for i, v in enumerate(ce)}
    common = sorted(set(last_b) & set(last_e))
    return [last_b[v] for v in common], [last_e[v] for v in common]


def build_chunks(texts: list[str], base, expanded, max_base_tokens: int) -> list[Chunk]:
    """Pack documents (BOS + ids + EOS, as the training data) into chunks of at most ``max_base_tokens`` base
    tokens; a longer document is cut at its last aligned position that fits."""
    bb, eb = base.token_bytes(), expanded.token_bytes()
    chunks, cur_b, cur_e = [], [], []

    def flush():
        if len(cur_b) > 1:
            bp, ep = aligned_positions(cur_b, cur_e, bb, eb)
            chunks.append(Chunk(list(cur_b), list(cur_e), bp, ep))

    for doc in texts:
        b, e = base.encode_docs([doc])[0], expanded.encode_docs([doc])[0]
        if len(b) > max_base_tokens:
            bp, ep = aligned_positions(b, e, bb, eb)
            cut = [k for k, j in enumerate(bp) if j < max_base_tokens]
            if not cut:
                continue
            b, e = b[: bp[cut[-1]] + 1], e[: ep[cut[-1]] + 1]
        if len(cur_b) + len(b) > max_base_tokens:
            flush()
            cur_b, cur_e = [], []
        cur_b, cur_e = cur_b + b, cur_e + e
    flush()
    return chunks


def family_pieces(first_piece: dict[int, int]) -> tuple[torch.Tensor, dict[int, int]]:
    """Distinct first pieces (ids) and new token id -> family index."""
    pieces = sorted(set(first_piece.values()))
    index = {p: k for k, p in enumerate(pieces)}
    return torch.tensor(pieces, dtype=torch.long), {t: index[p] for t, p in first_piece.items()}


@torch.no_grad()
def teacher_pass(
    model, old_out: torch.Tensor, data, first_piece: dict[int, int], max_tokens: int, chunk_tokens: int = TEACHER_CHUNK
) -> TeacherSample:
    """Run the base ``model`` over the sample's chunks (at most ``max_tokens`` base tokens in all)."""
    from eeve.model.split import head_transform, transform_logits

    chunks = build_chunks(data.texts, data.base, data.expanded, chunk_tokens)
    kept, total = [], 0
    for c in chunks:
        if total + len(c.base_ids) > max_tokens and kept:
            break
        kept.append(c)
        total += len(c.base_ids)
    if not kept:
        raise ExpansionError("the init sample has no document with aligned positions: give more training text")
    scale, cap = head_transform(model.config)
    pieces, _ = family_pieces(first_piece)
    dev = old_out.device
    was = model.training
    model.eval()
    hid, nxt, lz, flp, cof = [], [], [], [], []
    for k, c in enumerate(kept):
        h = model.model(input_ids=torch.tensor([c.base_ids], device=dev), use_cache=False).last_hidden_state[0]
        h = h.float()[torch.tensor(c.base_pos, device=dev)]
        logits = transform_logits(h @ old_out.T, scale, cap)
        z = torch.logsumexp(logits, -1)
        hid.append(h)
        lz.append(z)
        flp.append(logits[:, pieces.to(dev)] - z[:, None])
        nxt.append(torch.tensor([c.exp_ids[i + 1] if i + 1 < len(c.exp_ids) else -1 for i in c.exp_pos]))
        cof.append(torch.full((len(c.base_pos),), k, dtype=torch.long))
    model.train(was)
    sample = TeacherSample(kept, torch.cat(hid), torch.cat(nxt), torch.cat(lz), torch.cat(flp), torch.cat(cof))
    n = int(sample.hidden.shape[0])
    sample.stats = {"teacher_tokens": total, "aligned_positions": n, "chunks": len(kept)}
    sample.passes = teacher_passes([len(c.base_ids) for c in kept], n, old_out.shape[1], old_out.shape[0])
    return sample


def teacher_passes(chunk_lengths: list[int], aligned: int, hidden: int, base_vocab: int) -> list[dict]:
    """What :func:`teacher_pass` and :func:`shift_direction` run: the backbone forward over every chunk
    (attention's effective positions per sequence: sum(L^2) / sum(L)), the base head at the aligned positions,
    and the shift direction's H^T H."""
    tokens = sum(chunk_lengths)
    return [
        {
            "what": "teacher forward",
            "groups": [],
            "tokens": tokens,
            "seq": sum(L * L for L in chunk_lengths) / max(tokens, 1),
            "head": "none",
        },
        {"what": "teacher head at aligned positions", "flops": 2 * hidden * base_vocab * aligned},
        {"what": "shift direction", "flops": 2 * aligned * hidden * hidden},
    ]


def shift_direction(hidden: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, dict]:
    """m with h·m ≈ 1 over the teacher's hidden states (least squares, ridge scaled to their second moment): adding
    c·m to an output row adds about c to its logit in every context — a bias the bias-free head does not have."""
    h = hidden.double()
    second = h.T @ h / len(h)
    lam = ridge * float(second.diagonal().mean())
    m = torch.linalg.solve(second + lam * torch.eye(h.shape[1], dtype=h.dtype), h.mean(0))
    dots = h @ m
    return m.float(), {"shift_dot_mean": round(float(dots.mean()), 4), "shift_dot_std": round(float(dots.std()), 4)}


def fit_family_offset(sample: TeacherSample, new_fam: dict[int, int], base_vocab: int) -> float:
    """The offset b that maximises the sample's likelihood when every family's new tokens share the mass
    ``e^b · P(first piece)`` (split by frequency): sum over positions of [next is new](b + ...) - log(1 + e^b M),
    M = the base's total probability of family first pieces there. Concave in b; solved by bisection."""
    mass = sample.first_logp.double().exp().sum(-1).clamp_min(1e-30)  # M per position
    valid = sample.next_ids >= 0
    n_new = float(((sample.next_ids >= base_vocab) & valid).sum())
    log_m = mass[valid].log()
    if n_new == 0:
        return 0.0
    lo, hi = -20.0, 30.0
    for _ in range(60):  # d/db = n_new - sum sigmoid(b + log M) is decreasing in b
        mid = (lo + hi) / 2
        if n_new - torch.sigmoid(mid + log_m).sum().item() > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _head_loss(h, nxt, lz, w, base_vocab, scale, cap):
    """Mean -log Q(next) with Q = softmax([fixed base logits, new logits]), up to the fixed base logit of an old
    next token (which does not depend on the new rows)."""
    from eeve.model.split import transform_logits

    ln = transform_logits(h @ w.T, scale, cap)
    log_norm = torch.logaddexp(lz, torch.logsumexp(ln, -1))
    is_new = nxt >= base_vocab
    tgt = torch.where(is_new, ln.gather(-1, (nxt - base_vocab).clamp(min=0)[:, None]).squeeze(-1), lz)
    # old next token: -log Q = (log_norm - lz) + (-log P_base), the second part fixed; new: log_norm - z_t
    return (log_norm - tgt).mean()


def fit_new_output_rows(
    sample: TeacherSample,
    rows: torch.Tensor,
    base_vocab: int,
    scale: float,
    cap: float | None,
    epochs: int,
    lr: float,
    batch: int = 256,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Train the new output rows alone, on the teacher's hidden states: maximise the likelihood of the expanded
    tokenization's next token under softmax([base logits, new logits]) (the base logits and their normaliser are
    fixed: old rows do not move). English positions (no new token next) teach the new rows to stay out of the way;
    Korean ones to take the mass their pieces had. A tenth of the positions is held out: the rows of the epoch
    with the lowest held-out loss are kept (the sample is small next to the number of rows: early stopping, not
    more epochs, is what keeps this from overfitting)."""
    keep = torch.nonzero(sample.next_ids >= 0).squeeze(-1)
    g = torch.Generator().manual_seed(seed)
    keep = keep[torch.randperm(len(keep), generator=g)]
    n_val = max(1, len(keep) // 10)
    val, train = keep[:n_val], keep[n_val:]
    H, T, Z = sample.hidden, sample.next_ids, sample.log_z_old
    w = torch.nn.Parameter(rows.detach().clone())
    opt = torch.optim.Adam([w], lr=lr)

    def heldout() -> float:
        with torch.no_grad():
            return float(_head_loss(H[val], T[val], Z[val], w, base_vocab, scale, cap))

    before = best = heldout()
    best_rows, best_epoch = w.detach().clone(), 0
    per_epoch = math.ceil(len(train) / batch)
    for epoch in range(1, epochs + 1):
        order = train[torch.randperm(len(train), generator=g)]
        for k in range(per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            loss = _head_loss(H[idx], T[idx], Z[idx], w, base_vocab, scale, cap)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        now = heldout()
        if now < best:
            best, best_rows, best_epoch = now, w.detach().clone(), epoch
    h, new = H.shape[1], w.shape[0]
    flops = 4 * h * new * len(train) * epochs + 2 * h * new * len(val) * (epochs + 1)  # h @ w.T and its w-gradient
    return best_rows, {
        "passes": [{"what": "head fit", "flops": flops}],
        "head_fit_epochs": best_epoch,
        "head_fit_heldout_nats_before": round(before, 4),
        "head_fit_heldout_nats_after": round(best, 4),
    }


@dataclass
class DistillRows:
    """The embedding tables distillation reads (old rows, frozen) and starts from (new rows)."""

    old_in: torch.Tensor
    old_out: torch.Tensor
    new_in: torch.Tensor
    new_out: torch.Tensor
    base_vocab: int


@dataclass
class DistillSettings:
    """``init_options.distill_*``: steps, chunks per step, tokens per chunk, peak learning rate, and the seed."""

    steps: int
    batch: int
    seq_len: int
    lr: float
    seed: int = 0


def distill_new_rows(
    model, sample: TeacherSample, rows: DistillRows, opts: DistillSettings
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Train the new INPUT rows inside the base model's frozen backbone (the expanded model, without building it;
    the output rows stay as given): at aligned positions, the expanded model's next-token distribution over the
    BASE vocabulary must match the base model's after the same bytes as pieces (KL, teacher = base), and the next
    expanded token must be likely (cross-entropy over the whole expanded vocabulary). Returns (new input rows, new
    output rows, stats)."""
    from eeve.model.split import embedding_scale

    emb_scale = embedding_scale(model.get_input_embeddings())
    w_in = torch.nn.Parameter(rows.new_in.clone())
    rows = DistillRows(rows.old_in, rows.old_out, w_in, rows.new_out.detach(), rows.base_vocab)
    opt = torch.optim.AdamW([w_in], lr=opts.lr, weight_decay=0.0)
    # per chunk: where its aligned positions start in the teacher arrays
    starts = np.concatenate([[0], np.cumsum([len(c.exp_pos) for c in sample.chunks])])
    g = torch.Generator().manual_seed(opts.seed)
    hist, teacher_rows = [], 0
    with _frozen_eval(model):
        for step in range(opts.steps):
            picks = torch.randint(0, len(sample.chunks), (opts.batch,), generator=g).tolist()
            x, lengths, kr, kt = _distill_batch(sample, picks, starts, opts.seq_len, rows.old_in.device)
            emb = torch.cat([rows.old_in, w_in], 0)[x] * emb_scale
            ce, kl = _distill_losses(model, sample, rows, emb, x, lengths, kr, kt)
            teacher_rows += len(kt)
            loss = ce + kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = opts.lr * warmup_cosine(step, opts.steps, min_ratio=0.1)
            opt.step()
            hist.append((ce.item(), kl.item()))
            if step % 10 == 0 or step == opts.steps - 1:
                log.info("distill step %d/%d: cross-entropy %.4f, KL to the base %.4f", step + 1, opts.steps, *hist[-1])
    first, last = hist[0] if hist else (0, 0), np.mean(hist[-10:], 0) if hist else (0, 0)
    return (
        w_in.detach(),
        rows.new_out,
        {
            "passes": [
                {  # the backbone and the whole head at every position, gradients to the input rows
                    "what": "distill",
                    "groups": ["new_input"],
                    "tokens": opts.steps * opts.batch * opts.seq_len,
                    "seq": opts.seq_len,
                    "head": "expanded",
                },
                {"what": "distill teacher logits", "flops": 2 * rows.old_in.shape[1] * rows.base_vocab * teacher_rows},
            ],
            "distill_steps": opts.steps,
            "distill_ce_first": round(float(first[0]), 4),
            "distill_ce_last": round(float(last[0]), 4),
            "distill_kl_first": round(float(first[1]), 4),
            "distill_kl_last": round(float(last[1]), 4),
        },
    )


@contextmanager
def _frozen_eval(model):
    """The model frozen (its trainable parameters handed back trainable after) and in eval mode (no dropout: the
    teacher ran in eval mode too)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was = model.training
    model.eval()
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was)


def _distill_batch(sample: TeacherSample, picks: list[int], starts: np.ndarray, seq_len: int, dev):
    """The picked chunks as a [batch, seq_len] id tensor (zero-padded), their lengths, and the flat rows of their
    aligned positions with the matching teacher indices."""
    ids, kl_rows, kl_teacher = [], [], []
    for b, ci in enumerate(picks):
        c = sample.chunks[ci]
        ids.append((c.exp_ids + [0] * seq_len)[:seq_len])
        for k, pos in enumerate(c.exp_pos):
            if pos < seq_len:
                kl_rows.append(b * seq_len + pos)
                kl_teacher.append(int(starts[ci]) + k)
    x = torch.tensor(ids, device=dev)
    lengths = torch.tensor([min(len(sample.chunks[ci].exp_ids), seq_len) for ci in picks], device=dev)
    return x, lengths, torch.tensor(kl_rows, device=dev), torch.tensor(kl_teacher, device=dev)


def _distill_losses(model, sample: TeacherSample, rows: DistillRows, emb, x, lengths, kr, kt):
    """(cross-entropy of the next expanded token inside each chunk's real length, KL(teacher || student) over the
    base vocabulary at the aligned positions)."""
    from eeve.model.split import head_transform, transform_logits

    scale, cap = head_transform(model.config)
    batch, seq_len = x.shape
    dev, base_vocab = x.device, rows.base_vocab
    h = model.model(inputs_embeds=emb, use_cache=False).last_hidden_state.float().reshape(-1, rows.old_in.shape[1])
    lo = transform_logits(h @ rows.old_out.T, scale, cap)
    ln = transform_logits(h @ rows.new_out.T, scale, cap)
    tgt = x[:, 1:].reshape(-1)
    valid = (torch.arange(seq_len - 1, device=dev)[None, :] < (lengths[:, None] - 1)).reshape(-1)
    flat = torch.arange(batch * seq_len, device=dev).view(batch, seq_len)[:, :-1].reshape(-1)[valid]
    t = tgt[valid]
    lse = torch.logaddexp(torch.logsumexp(lo[flat], -1), torch.logsumexp(ln[flat], -1))
    zt = torch.where(
        t >= base_vocab,
        ln[flat].gather(-1, (t - base_vocab).clamp(min=0)[:, None]).squeeze(-1),
        lo[flat].gather(-1, t.clamp(max=base_vocab - 1)[:, None]).squeeze(-1),
    )
    ce = (lse - zt).mean()
    log_p = transform_logits(sample.hidden[kt].to(dev) @ rows.old_out.T, scale, cap).log_softmax(-1)
    log_q = lo[kr].log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return ce, kl
