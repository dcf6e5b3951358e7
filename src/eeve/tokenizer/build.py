"""EEVE tokenizer expansion (the model card's construction), used by `python tokenize.py`.

  1. train an intermediate BPE on the target-language corpus with the base's conventions (`tokenizers` BpeTrainer);
  2. candidates = its tokens absent from the base made of an optional leading space and target-script characters
     (at least one a target character: EEVE's `▁?[Hangul]+`, generalised by eeve.text.scripts);
  3. target = base vocab + new tokens (ids contiguous from the base size) + their merges appended *after* every
     base merge (lowest priority), with the ancestors each new token needs; verify every new token is reachable
     by the bare BPE model, repair the ones that are not;
  4. count token frequencies over the corpus with the target;
  5. drop new tokens seen < min_frequency times -- except merge ancestors of a kept token (dropping one would make
     the kept token unreachable) and single characters whose *character* frequency passes (step 6 adds them);
  6. add the single target characters missing from the vocabulary seen >= min_frequency times;
  7. repeat 3-6 until nothing is dropped or added; then drop the least frequent removable new tokens until the
     vocabulary size is a multiple of `vocab_multiple_of`, and recount.

Why text without target characters encodes exactly as the base: every new token, and every token a new merge
produces, contains a target character (byte-level bases: bytes that only occur inside target characters). A new
merge can only fire where its result occurs in the text, so text without target characters sees only base merges;
new vocabulary entries that are never formed change nothing. The one deliberate difference: the target normalises
to NFC (the base does not), so non-NFC input encodes as the base encodes its NFC form; NFC text is untouched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, trainers

from eeve.config import TokenizeConfig
from eeve.errors import CorpusError, TokenizerBuildError
from eeve.text.corpus import CorpusStats, iter_documents
from eeve.text.scripts import TargetScripts, target_scripts
from eeve.text.sources import open_sources
from eeve.tokenizer.base import BaseTokenizer, bpe_pieces
from eeve.tokenizer.counting import Counts, count_tokens
from eeve.tokenizer.kinds import TokenizerKind


# ----------------------------------------------------------------------------------------------- BPE helpers
class BPESim:
    """A pure-Python BPE (same rule as `tokenizers`: lowest-rank pair first, leftmost on ties) over a vocab and
    merge ranks that grow as merges are appended; used to build and repair, cross-checked by the real model."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], kind: TokenizerKind):
        self.vocab = vocab
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.kind = kind

    def add_merge(self, a: str, b: str) -> None:
        self.ranks.setdefault((a, b), len(self.ranks))

    def initial(self, token: str) -> list[str]:
        return self.kind.initial_symbols(token, self.vocab)

    def derive(self, token: str) -> tuple[list[str], list[str]]:
        """(final pieces, every intermediate symbol formed on the way, in order)."""
        syms = self.initial(token)
        formed: list[str] = []
        while len(syms) > 1:
            best, pos = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, pos = r, i
            if best is None:
                break
            syms[pos : pos + 2] = [syms[pos] + syms[pos + 1]]
            formed.append(syms[pos])
        return syms, formed


# ----------------------------------------------------------------------------------------------- building
@dataclass
class Expansion:
    """The growing target: base + ordered new tokens + appended merges."""

    base: BaseTokenizer
    base_size: int
    script: TargetScripts  # new tokens and merges must hold (or byte-imply) its target characters
    new_tokens: list[str] = field(default_factory=list)
    new_merges: list[tuple[str, str]] = field(default_factory=list)

    def vocab(self) -> dict[str, int]:
        v = dict(self.base.vocab)
        v.update({t: self.base_size + i for i, t in enumerate(self.new_tokens)})
        return v

    def tokenizer_json(self) -> dict:
        tj = json.loads(json.dumps(self.base.tokenizer_json))
        tj["model"]["vocab"] = self.vocab()
        tj["model"]["merges"] = [list(m) for m in self.base.merges] + [list(m) for m in self.new_merges]
        norm = tj.get("normalizer")
        if norm is None:
            tj["normalizer"] = {"type": "NFC"}
        elif norm.get("type") == "Sequence":
            norm["normalizers"] = [{"type": "NFC"}] + [n for n in norm["normalizers"] if n.get("type") != "NFC"]
        elif norm.get("type") != "NFC":
            tj["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}, norm]}
        return tj

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(json.dumps(self.tokenizer_json()))

    def sim(self) -> BPESim:
        return BPESim(self.vocab(), self.base.merges + self.new_merges, self.base.kind)


def base_vocab_size(base: BaseTokenizer) -> int:
    ids = list(base.vocab.values()) + [t["id"] for t in base.tokenizer_json.get("added_tokens", [])]
    return max(ids) + 1


def intermediate_tokenizer(base: BaseTokenizer) -> Tokenizer:
    """An empty BPE with the base's conventions, ready for BpeTrainer."""
    return Tokenizer.from_str(json.dumps(base.kind.intermediate_json(base.tokenizer_json)))


def train_intermediate(
    base: BaseTokenizer, docs: Iterable[str], vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = intermediate_tokenizer(base)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        max_token_length=16,
        **base.kind.trainer_kwargs(),
    )
    tok.train_from_iterator(docs, trainer=trainer)
    m = json.loads(tok.to_str())["model"]
    merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    return m["vocab"], merges


def _closure(
    cands: list[str], inter_merge: dict[str, tuple[str, str]], base: BaseTokenizer, script
) -> tuple[set[str], list[str]]:
    """New tokens needed for the candidates: candidates + their intermediate merge ancestors missing from the base.
    Ancestors that are not target tokens (byte-level bases: e.g. the last two bytes of a syllable) are left out
    (returned second); `ensure_reachable` then builds those candidates from their current segmentation."""
    vocab = base.vocab
    needed: set[str] = set()
    left_out: set[str] = set()
    for c in cands:
        stack = [c]
        while stack:
            t = stack.pop()
            if t in vocab or t in needed or t in left_out:
                continue
            if not base.kind.is_target_token(t, script):
                left_out.add(t)
                continue
            needed.add(t)
            if t in inter_merge:
                stack.extend(inter_merge[t])
    return needed, sorted(left_out)


def ensure_reachable(exp: Expansion, log: dict | None = None) -> list[str]:
    """Make every new token reachable by the bare BPE model (repair by appending left-to-right merges of its
    current segmentation, adding support tokens as needed); drop tokens that cannot be (a support token that is
    not a target token would be needed). Cross-checked with the real `tokenizers` model. Returns the dropped tokens."""
    sim = exp.sim()
    vocab = sim.vocab
    kind, script = exp.base.kind, exp.script
    dropped_all: list[str] = []
    repaired = 0
    for _ in range(5):
        dropped: list[str] = []
        changed = False
        for t in list(exp.new_tokens):
            if len(t) == 1:
                continue  # a character in the vocabulary is its own initial symbol
            pieces, _ = sim.derive(t)
            if pieces == [t]:
                continue
            changed = True
            plan, cur = [], pieces[0]
            for s in pieces[1:]:
                plan.append((cur, s, cur + s))
                cur = cur + s
            if any(kind.is_byte_piece(p) for p in pieces) or any(
                r not in vocab and not kind.is_target_token(r, script) for *_, r in plan
            ):
                dropped.append(t)  # a character missing from the vocab, or a support token that is not a target token
                continue
            for a, b, r in plan:
                if r not in vocab:
                    vocab[r] = exp.base_size + len(exp.new_tokens)
                    exp.new_tokens.append(r)
                exp.new_merges.append((a, b))
                sim.add_merge(a, b)
            repaired += 1
        if dropped:
            drop = set(dropped)
            exp.new_tokens = [t for t in exp.new_tokens if t not in drop]
            exp.new_merges = [m for m in exp.new_merges if not ({m[0], m[1], m[0] + m[1]} & drop)]
            sim = exp.sim()
            vocab = sim.vocab
            dropped_all += dropped
        if not changed:
            break
    if log is not None and dropped_all:
        log.setdefault("unreachable_dropped", []).extend(dropped_all)
    # authoritative check with the real model (ignore_merges off: a bare lookup would hide missing merges)
    tj = exp.tokenizer_json()
    tj["model"]["ignore_merges"] = False
    real = Tokenizer.from_str(json.dumps({**tj, "normalizer": None, "pre_tokenizer": None, "post_processor": None}))
    bad = [t for t in exp.new_tokens if bpe_pieces(real, t) != [t]]
    if bad:
        raise TokenizerBuildError(
            f"{len(bad)} new tokens unreachable after repair (e.g. {bad[:3]}): this is a bug, please report it"
        )
    if log is not None:
        log["repaired"] = log.get("repaired", 0) + repaired
    return dropped_all


def required_ancestors(exp: Expansion, keep: Iterable[str]) -> set[str]:
    """New tokens formed on the way to any token in `keep` (dropping one would make it unreachable)."""
    sim = exp.sim()
    new = set(exp.new_tokens)
    out: set[str] = set()
    for t in keep:
        _, formed = sim.derive(t)
        out.update(x for x in sim.initial(t) + formed if x in new and x != t)
    return out


def restrict(exp: Expansion, keep: set[str], add_chars: list[str]) -> Expansion:
    """Keep only `keep` (order and merges preserved: removing a merge that never fires in a kept token's derivation
    leaves that derivation unchanged) and append single characters."""
    toks = [t for t in exp.new_tokens if t in keep] + [c for c in add_chars if c not in keep]
    have = set(exp.base.vocab) | set(toks)
    merges = [m for m in exp.new_merges if m[0] + m[1] in have and m[0] in have and m[1] in have]
    return Expansion(exp.base, exp.base_size, exp.script, toks, merges)


def _count(exp_or_tok, paths, cfg: TokenizeConfig, base_dir, count_chars=False, stats=None) -> Counts:
    tok = exp_or_tok if isinstance(exp_or_tok, Tokenizer) else exp_or_tok.tokenizer()
    docs = iter_documents(paths, stats=stats, progress=cfg.progress, base_dir=base_dir)  # paths: opened sources
    return count_tokens(tok, docs, batch_bytes=cfg.batch_bytes, count_chars=count_chars)


def _examples(tokens: Iterable[str], n: int = 8) -> list[str]:
    return list(tokens)[:n]


def build_expanded_tokenizer(base: BaseTokenizer, cfg: TokenizeConfig, base_dir: str | None = None, say=print) -> dict:
    """Run steps 1-7. Returns a dict with the Expansion, counts, iteration log and corpus stats."""
    paths = open_sources(cfg.corpus, base_dir)
    stats = CorpusStats()
    script = target_scripts(cfg.target.scripts, cfg.target.ranges)
    inter_vocab, inter_merges = _train_on_corpus(base, cfg, paths, stats, script, base_dir, say)
    exp, cands, skipped = _first_expansion(base, script, inter_vocab, inter_merges, say)
    log: dict = {}
    ensure_reachable(exp, log)
    exp, counts, char_counts, iterations = _settle(exp, paths, cfg, base_dir, log, say)
    exp, counts, trimmed = _trim_to_multiple(exp, counts, paths, cfg, base_dir, log, say)
    return {
        "expansion": exp,
        "counts": counts,
        "char_counts": char_counts,
        "iterations": iterations,
        "stats": stats,
        "log": log,
        "trimmed": trimmed,
        "candidates": len(cands),
        "intermediate_vocab": len(inter_vocab),
        "skipped": skipped,
    }


def _train_on_corpus(
    base: BaseTokenizer, cfg: TokenizeConfig, paths, stats: CorpusStats, script: TargetScripts, base_dir, say
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Step 1: the intermediate BPE over the corpus (or its first `intermediate_max_mb`); fails on a corpus with no
    documents or no target character."""
    seen_target = [False]
    limit = cfg.intermediate_max_mb * 1e6 if cfg.intermediate_max_mb else float("inf")

    def train_docs():
        for d in iter_documents(paths, stats=stats, progress=cfg.progress, base_dir=base_dir):
            if not seen_target[0] and script.has_target(d):
                seen_target[0] = True
            yield d
            if stats.text_bytes >= limit:
                break

    t0 = time.time()
    inter_vocab, inter_merges = train_intermediate(base, train_docs(), cfg.intermediate_vocab_size)
    if stats.documents == 0:
        raise CorpusError(
            f"corpus {cfg.corpus.paths} holds no documents (empty files or blank lines only): give "
            "non-empty target-language text"
        )
    if not seen_target[0]:
        where = " (in the intermediate sample: raise intermediate_max_mb)" if stats.text_bytes >= limit else ""
        raise CorpusError(
            f"no character of the target scripts {script.label} in corpus {cfg.corpus.paths}{where}: "
            "set target.scripts or corpus.paths"
        )
    say(
        f"corpus{' (intermediate sample)' if stats.text_bytes >= limit else ''}: {len(paths)} files, {stats.documents:,} documents, {stats.text_bytes / 1e6:.2f} MB text"  # noqa: E501
        f"{f', {stats.invalid_utf8_lines} invalid UTF-8 lines skipped' if stats.invalid_utf8_lines else ''}"
    )
    say(f"intermediate BPE: {len(inter_vocab):,} tokens, {len(inter_merges):,} merges ({time.time() - t0:.1f}s)")
    return inter_vocab, inter_merges


def _first_expansion(
    base: BaseTokenizer, script: TargetScripts, inter_vocab: dict[str, int], inter_merges: list[tuple[str, str]], say
) -> tuple[Expansion, list[str], list[str]]:
    """Steps 2-3: (the expansion by the candidates and their ancestors, the candidates, the non-target ancestors
    left out). Not yet checked for reachability."""
    inter_rank = {a + b: r for r, (a, b) in enumerate(inter_merges)}
    inter_merge = {a + b: (a, b) for a, b in reversed(inter_merges)}  # first (lowest-rank) merge wins
    cands = sorted(
        (t for t in inter_vocab if base.kind.is_candidate(t, script) and t not in base.vocab),
        key=lambda t: (inter_rank.get(t, -1), t),
    )
    needed, skipped = _closure(cands, inter_merge, base, script)
    left_out = f", {len(skipped)} non-target ancestors left out" if skipped else ""
    say(
        f"candidates: {len(cands):,} {script.label} tokens absent from the base "
        f"({len(needed) - len(set(cands) & needed):,} ancestors added{left_out})"
    )
    order = sorted(needed, key=lambda t: (inter_rank.get(t, -1), t))  # single chars (rank -1) first
    have = needed | set(base.vocab)
    merges = [inter_merge[t] for t in order if t in inter_merge and set(inter_merge[t]) <= have]
    return Expansion(base, base_vocab_size(base), script, order, merges), cands, skipped


def _new_token_freq(exp: Expansion, counts: Counts) -> dict[str, int]:
    return {t: int(counts.tokens[exp.base_size + i]) for i, t in enumerate(exp.new_tokens)}


def _missing_chars(exp: Expansion, char_counts: Counts, m: int) -> list[str]:
    """Step 6: tokens of the target characters seen >= m times that the vocabulary lacks, most frequent first."""
    kind, script = exp.base.kind, exp.script
    present = set(exp.vocab())
    return [
        kind.char_token(c)
        for c in sorted(
            (chr(c) for c in np.flatnonzero(char_counts.chars >= m).tolist() if script.is_target_char(chr(c))),
            key=lambda c: (-char_counts.char_count(c), c),
        )
        if kind.char_token(c) not in present
    ]


def _settle(
    exp: Expansion, paths, cfg: TokenizeConfig, base_dir, log: dict, say
) -> tuple[Expansion, Counts, Counts, list[dict]]:
    """Steps 4-7: count, drop rare tokens, add frequent characters, until nothing changes (or max_iterations).
    Returns (expansion, its counts, the first pass's character counts, the iteration log)."""
    kind, m = exp.base.kind, cfg.min_frequency
    iterations = []
    unaddable: set[str] = set()  # characters whose byte-level merges would need a non-target support token
    char_counts = None
    for it in range(1, cfg.max_iterations + 1):
        t1 = time.time()
        counts = _count(exp, paths, cfg, base_dir, count_chars=char_counts is None)
        if char_counts is None:
            char_counts = counts
        freq = _new_token_freq(exp, counts)
        char_ok = lambda t: kind.is_single_char(t) and char_counts.char_count(kind.token_text(t)) >= m  # noqa: E731
        keep = {t for t, f in freq.items() if f >= m or char_ok(t)}
        keep |= required_ancestors(exp, keep)
        dropped = [t for t in exp.new_tokens if t not in keep]
        added = [t for t in _missing_chars(exp, char_counts, m) if t not in unaddable]
        rec = {
            "iteration": it,
            "new_tokens": len(exp.new_tokens),
            "dropped": len(dropped),
            "added": len(added),
            "dropped_examples": _examples(sorted(dropped, key=lambda t: freq[t])),
            "added_examples": _examples(added),
            "seconds": round(time.time() - t1, 2),
        }
        iterations.append(rec)
        say(
            f"iteration {it}: {len(exp.new_tokens):,} new tokens counted, {len(dropped):,} below min_frequency={m} dropped, "  # noqa: E501
            f"{len(added):,} single characters added ({rec['seconds']}s)"
        )
        if not dropped and not added:
            break
        exp = restrict(exp, keep, added)
        unaddable |= set(added) & set(ensure_reachable(exp, log))
    else:
        counts = _count(exp, paths, cfg, base_dir)
        say(f"max_iterations={cfg.max_iterations} reached before the vocabulary settled")
    return exp, counts, char_counts, iterations


def _trim_to_multiple(
    exp: Expansion, counts: Counts, paths, cfg: TokenizeConfig, base_dir, log: dict, say
) -> tuple[Expansion, Counts, list[str]]:
    """Step 7's end: a vocabulary size that is a multiple of `vocab_multiple_of`, by dropping the rarest removable
    new tokens (recounted after). Returns (expansion, counts, the trimmed tokens)."""
    mult = cfg.vocab_multiple_of
    trimmed: list[str] = []
    if not mult or mult <= 1:
        return exp, counts, trimmed
    excess = (exp.base_size + len(exp.new_tokens)) % mult
    if excess and excess > len(exp.new_tokens):
        say(f"warning: only {len(exp.new_tokens)} new tokens, cannot reach a multiple of {mult}")
        excess = 0
    freq = _new_token_freq(exp, counts)
    while excess:
        keep = set(exp.new_tokens)
        needed_by_others = required_ancestors(exp, keep)
        removable = sorted((t for t in keep if t not in needed_by_others), key=lambda t: (freq[t], t))
        k = min(excess, len(removable))
        gone = set(removable[:k])
        trimmed += removable[:k]
        exp = restrict(exp, keep - gone, [])
        excess -= k
    if trimmed:
        ensure_reachable(exp, log)
        counts = _count(exp, paths, cfg, base_dir)
        say(f"vocab_multiple_of={mult}: dropped the {len(trimmed)} rarest removable new tokens, recounted")
    return exp, counts, trimmed
