"""How the new rows of an expanded model start: one class per method, registered by name (``init=<name>``).

* ``mean_subwords`` (EEVE's "subword-based" init; ``recipe=eeve_paper`` and ``recipe=full``):
    - the token's own symbols (e.g. ``"▁한국어"``) are split by the BASE tokenizer's BPE model alone (no normalizer,
      no pre-tokenizer, no post-processor: exactly the pieces the base model saw for this text in context);
    - **rule for the leading word marker**: if the first piece is the bare word-start marker (``"▁"`` SentencePiece,
      ``"Ġ"`` byte-level; the tokenizer kind says which) and other pieces follow, it is DROPPED. Otherwise
      thousands of word-initial tokens would average in the same marker row (it carries "a word starts here", not
      the word) and, worse, all of them would get the marker's output row as their "first piece", i.e. identical
      logits. A token that is only the marker keeps it.
    - input row  = mean of the base input rows of the remaining pieces. Byte-fallback pieces (``<0xNN>``) ARE
      included: that is how the base model saw a character missing from its vocabulary.
    - output row = base output row of the first remaining piece (the first non-marker piece, byte or not): the
      base model's logit for *starting* this token.
    - pieces that are the unknown token are ignored; a token with no usable piece falls back to ``mean``.
* ``mean``: every new row = mean of all old rows (input and output separately).
* ``mean_cov``: sample from N(mean, 1e-9 * covariance) of the old rows -- exactly transformers'
  ``resize_token_embeddings(mean_resizing=True)`` default (the 1e-9 factor is theirs).
* ``random``: N(0, config.initializer_range).
* ``mass_first_piece``: as mean_subwords, but new tokens sharing a first piece split its probability
  (see :class:`MassFirstPiece`); runs the base model once over a sample of the training text.
* ``distill``: mass_first_piece, then a short distillation of the new rows from the base model (:class:`Distill`).

Adding a method: subclass :class:`InitMethod`, decorate it with ``@register``, and it is selectable as
``init=<name>``. All arithmetic is float32; the caller casts back to the model's dtype.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch

from eeve.config import INITS
from eeve.errors import ExpansionError
from eeve.model.split import head_transform
from eeve.model.teacher import (
    TEACHER_CHUNK,
    DistillRows,
    DistillSettings,
    distill_new_rows,
    family_pieces,
    fit_family_offset,
    fit_new_output_rows,
    shift_direction,
    teacher_pass,
    teacher_passes,
)
from eeve.tokenizer.kinds import kind_of_tokenizer

log = logging.getLogger(__name__)


@dataclass
class InitContext:
    """What an init method may use. Rows are float32; ``items`` are (id, token) of the new tokens, ids >= base."""

    old_in: torch.Tensor
    old_out: torch.Tensor
    items: Sequence[tuple[int, str]]
    base_tokenizer: object  # tokenizers.Tokenizer of the base
    base_vocab_size: int
    generator: torch.Generator
    std: float
    model: object = None  # the (unexpanded) base model, for methods that run it
    data: object = None
    """eeve.model.init_data.InitData (sample texts, both tokenizers, frequencies, budget) for ``needs_data``."""
    stats: dict = field(default_factory=dict)
    """Filled by the method: counts worth reporting (logged and kept in ``model.eeve_expansion``)."""


class InitMethod:
    """Computes (new input rows, new output rows), each [len(items), hidden]."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    """Whether the method reads text and runs the base model (then ``ctx.data`` and ``ctx.model`` are set)."""

    def rows(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def planned_passes(self, options, hidden: int, base_vocab: int, n_new: int) -> list[dict]:
        """What ``rows`` will run over the base model (eeve.model.teacher's passes), before it runs: an upper
        bound for a FLOP budget. ``rows`` records what it did run in ``ctx.stats["passes"]``."""
        return []


INIT_METHODS: dict[str, type[InitMethod]] = {}


def register(cls: type[InitMethod]) -> type[InitMethod]:
    if cls.name not in INITS:  # the torch-free config checks `init=` against that list
        raise ExpansionError(f"init method {cls.name!r} is not in eeve.config.INITS: add its name there")
    INIT_METHODS[cls.name] = cls
    return cls


def get_init(name: str) -> InitMethod:
    try:
        return INIT_METHODS[name]()
    except KeyError:
        raise ExpansionError(f"init={name!r} is unknown: choose one of {', '.join(INIT_METHODS)}") from None


@register
class Mean(InitMethod):
    name = "mean"

    def rows(self, ctx):
        n = len(ctx.items)
        return ctx.old_in.mean(0).expand(n, -1).clone(), ctx.old_out.mean(0).expand(n, -1).clone()


@register
class MeanCov(InitMethod):
    name = "mean_cov"

    def rows(self, ctx):
        n = len(ctx.items)
        return _mean_cov_rows(ctx.old_in, n, ctx.generator), _mean_cov_rows(ctx.old_out, n, ctx.generator)


@register
class Random(InitMethod):
    name = "random"

    def rows(self, ctx):
        n, h = len(ctx.items), ctx.old_in.shape[1]
        rand = lambda: torch.randn(n, h, generator=ctx.generator) * ctx.std  # noqa: E731
        return rand(), rand()


@register
class MeanSubwords(InitMethod):
    """EEVE: input row = mean of the pieces' rows, output row = the first piece's row (see module docstring)."""

    name = "mean_subwords"

    def rows(self, ctx):
        new_in, new_out = Mean().rows(ctx)  # tokens without a usable piece keep the mean
        plan = subword_plan(ctx.base_tokenizer, ctx.items)
        flat, seg, out_ids, out_rows = [], [], [], []
        st = ctx.stats
        for k in ("n_leading_space_skipped", "n_with_byte_pieces", "n_fallback_mean", "n_single_piece"):
            st.setdefault(k, 0)
        n_pieces = 0
        for k, p in enumerate(plan):
            st["n_leading_space_skipped"] += p["skipped_marker"]
            st["n_with_byte_pieces"] += p["byte_pieces"]
            if not p["input_ids"]:
                st["n_fallback_mean"] += 1
                continue
            n_pieces += len(p["input_ids"])
            st["n_single_piece"] += len(p["input_ids"]) == 1
            flat += p["input_ids"]
            seg += [k] * len(p["input_ids"])
            out_ids.append(p["output_id"])
            out_rows.append(k)
        usable = len(plan) - st["n_fallback_mean"]
        st["mean_pieces"] = n_pieces / usable if usable else 0.0
        st["examples"] = [{"token": p["token"], "pieces": p["pieces"]} for p in plan[:5]]
        if flat:
            n, h = len(plan), ctx.old_in.shape[1]
            seg_t = torch.tensor(seg, dtype=torch.long)
            sums = torch.zeros(n, h).index_add_(0, seg_t, ctx.old_in[torch.tensor(flat)])
            cnt = torch.zeros(n).index_add_(0, seg_t, torch.ones(len(seg)))
            rows_t = torch.tensor(out_rows, dtype=torch.long)
            new_in[rows_t] = sums[rows_t] / cnt[rows_t, None]
            new_out[rows_t] = ctx.old_out[torch.tensor(out_ids, dtype=torch.long)]
        return new_in, new_out


@register
class MassFirstPiece(InitMethod):
    """EEVE's rows, but the k new tokens sharing a first piece p share p's probability instead of each claiming
    all of it (which costs about log2 k bits per token until training separates them).

    Wanted: logit(t) = logit(p) + log q_t + b, with q_t = t's share of its family's corpus frequency (add-one)
    and b one offset for all families. The head has no bias, so the offset rides on a direction m with h·m ≈ 1
    for the base's final hidden states h (least squares over the teacher's states; the fit's spread is reported):
    output row(t) = row(p) + (log q_t + b)·m. b maximises the teacher sample's likelihood of the expanded
    tokenization's next tokens: each family's new tokens hold e^b·P(p) of the mass in context, so b > 0 lets
    them outweigh p itself (which the expanded tokenizer rarely emits in the target language) while costing
    log(1 + e^b·M) where M, the base's mass on those first pieces, is small (English). Input rows: mean_subwords."""

    name = "mass_first_piece"
    needs_data = True

    def rows(self, ctx):
        new_in, new_out, _ = self.shifted_rows(ctx)
        return new_in, new_out

    def shifted_rows(self, ctx):
        if ctx.data is None or ctx.model is None:
            raise ExpansionError(f"init={self.name} needs the base model and a text sample (expand_model(data=...))")
        new_in, new_out = MeanSubwords().rows(ctx)
        plan = subword_plan(ctx.base_tokenizer, ctx.items)
        first = {p["id"]: p["output_id"] for p in plan if p["output_id"] is not None}
        tokens = ctx.data.options.teacher_sample(ctx.old_in.shape[1])
        sample = teacher_pass(ctx.model, ctx.old_out, ctx.data, first, tokens)
        sample.next_ids = _item_space(sample.next_ids, ctx)
        m, st = shift_direction(sample.hidden)
        _, fam = family_pieces(first)
        b = fit_family_offset(sample, fam, ctx.base_vocab_size)
        freq = {i: ctx.data.frequencies.get(i, 0) + 1 for i in first}
        fam_total: dict[int, int] = {}
        for i, f in freq.items():
            fam_total[fam[i]] = fam_total.get(fam[i], 0) + f
        row = {tid: k for k, (tid, _) in enumerate(ctx.items)}
        for i, p in first.items():
            shift = math.log(freq[i] / fam_total[fam[i]]) + b
            new_out[row[i]] = ctx.old_out[p] + shift * m
        sizes = sorted(Counter(fam.values()).values(), reverse=True)
        ctx.stats.update(
            sample.stats, **st, family_offset=round(b, 4), n_families=len(sizes), largest_families=sizes[:5]
        )
        ctx.stats["passes"] = list(sample.passes)
        return new_in, new_out, sample

    def planned_passes(self, options, hidden, base_vocab, n_new):
        tokens = options.teacher_sample(hidden)
        return teacher_passes([TEACHER_CHUNK] * math.ceil(tokens / TEACHER_CHUNK), tokens, hidden, base_vocab)


@register
class Distill(MassFirstPiece):
    """A short distillation from the base model (the idea of "Token Distillation", Dobler et al. 2025; not their
    code), starting from ``mass_first_piece``:

    1. the new OUTPUT rows alone are fitted on the teacher's final hidden states at aligned positions (see
       eeve.model.teacher): the expanded tokenization's next token must be likely under the softmax over the
       base logits (fixed) and the new logits — cheap, no backbone (``head_epochs``, ``head_lr``; the epoch best
       on held-out positions is kept);
    2. then the new INPUT rows train through the frozen backbone for ``distill_steps`` (Token Distillation's
       part): after the new tokens, the model's next-token distribution over the base vocabulary must match the
       base model's after the same bytes as pieces (KL, teacher = base), and the next expanded token must be
       likely.
    Only new rows change; the base's weights are untouched."""

    name = "distill"

    def rows(self, ctx):
        new_in, new_out, sample = self.shifted_rows(ctx)
        o = ctx.data.options
        scale, cap = head_transform(ctx.model.config)
        new_out, st = fit_new_output_rows(
            sample,
            new_out,
            ctx.base_vocab_size,
            scale,
            cap,
            o.head_epochs,
            o.head_lr,
            seed=int(ctx.generator.initial_seed()),
        )
        _record(ctx, st)
        if o.distill_steps > 0:
            new_in, new_out, st = distill_new_rows(
                ctx.model,
                sample,
                DistillRows(ctx.old_in, ctx.old_out, new_in, new_out, ctx.base_vocab_size),
                DistillSettings(
                    o.distill_steps, o.distill_batch, o.distill_seq_len, o.distill_lr, int(ctx.generator.initial_seed())
                ),
            )
            _record(ctx, st)
        return new_in, new_out

    def planned_passes(self, options, hidden, base_vocab, n_new):
        o = options
        fit = {"what": "head fit", "flops": 4 * hidden * n_new * o.teacher_sample(hidden) * (o.head_epochs + 1)}
        passes = super().planned_passes(options, hidden, base_vocab, n_new) + [fit]
        if o.distill_steps > 0:
            tokens = o.distill_steps * o.distill_batch * o.distill_seq_len
            distill = {"groups": ["new_input"], "tokens": tokens, "seq": o.distill_seq_len, "head": "expanded"}
            passes += [
                {"what": "distill", **distill},
                {"what": "distill teacher logits", "flops": 2 * hidden * base_vocab * tokens},
            ]
        return passes


def _record(ctx: InitContext, stats: dict) -> None:
    """A step's statistics into ``ctx.stats``, its passes after the earlier steps'."""
    ctx.stats["passes"] = ctx.stats.get("passes", []) + stats.pop("passes", [])
    ctx.stats.update(stats)


def _item_space(ids: torch.Tensor, ctx) -> torch.Tensor:
    """Expanded token ids -> ``base + row`` in the items' row order (so row k of the new block is column k)."""
    base = ctx.base_vocab_size
    top = max(int(ids.max()) + 1, max(i for i, _ in ctx.items) + 1, base + 1)
    lut = torch.arange(top)
    lut[base:] = -1  # padding ids (never produced by the tokenizer)
    for k, (tid, _) in enumerate(ctx.items):
        lut[tid] = base + k
    out = ids.clone()
    out[ids >= 0] = lut[ids[ids >= 0]]
    return out


def subword_plan(base_tokenizer, new_tokens: Sequence[tuple[int, str]]) -> list[dict]:
    """For each new token: its base pieces, input piece ids, output piece id and flags. Pure; used by the init
    methods and tests."""
    kind = kind_of_tokenizer(base_tokenizer)
    model = base_tokenizer.model
    unk_tok = getattr(model, "unk_token", None)
    unk = base_tokenizer.token_to_id(unk_tok) if unk_tok is not None else None
    plan = []
    for tid, text in new_tokens:
        # the BPE model alone: no normalizer / pre-tokenizer, and no added/special-token matching inside the text
        toks = model.tokenize(text)
        pieces, ids = [t.value for t in toks], [t.id for t in toks]
        skipped = False
        if len(pieces) > 1 and pieces[0] == kind.space_marker:
            pieces, ids = pieces[1:], ids[1:]
            skipped = True
        keep = [(p, i) for p, i in zip(pieces, ids) if i != unk]
        plan.append(
            {
                "id": tid,
                "token": text,
                "pieces": [p for p, _ in keep],
                "input_ids": [i for _, i in keep],
                "output_id": keep[0][1] if keep else None,
                "skipped_marker": skipped,
                "byte_pieces": any(kind.is_byte_piece(p) for p, _ in keep),
            }
        )
    return plan


def _mean_cov_rows(old: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    mean = old.mean(0)
    centered = old - mean
    cov = centered.T @ centered / old.shape[0]
    try:
        chol = torch.linalg.cholesky(1e-9 * cov)
    except Exception:  # not positive definite (e.g. fewer rows than dims): fall back to the mean, like transformers
        log.warning("mean_cov: covariance is not positive definite; using the mean")
        return mean.expand(n, -1).clone()
    z = torch.randn(n, old.shape[1], generator=gen, dtype=old.dtype)
    return mean + z @ chol.T
