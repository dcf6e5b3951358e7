"""EEVE tokenizer expansion (the model card's construction), used by `python tokenize.py`.

  1. train an intermediate BPE on the Korean corpus with the base's conventions (`tokenizers` BpeTrainer);
  2. candidates = its tokens of the form `▁?[Hangul]+` absent from the base;
  3. target = base vocab + new tokens (ids contiguous from the base size) + their merges appended *after* every
     base merge (lowest priority), with the ancestors each new token needs; verify every new token is reachable
     by the bare BPE model, repair the ones that are not;
  4. count token frequencies over the corpus with the target;
  5. drop new tokens seen < min_frequency times -- except merge ancestors of a kept token (dropping one would make
     the kept token unreachable) and single characters whose *character* frequency passes (step 6 adds them);
  6. add the single Hangul characters missing from the vocabulary seen >= min_frequency times;
  7. repeat 3-6 until nothing is dropped or added; then drop the least frequent removable new tokens until the
     vocabulary size is a multiple of `vocab_multiple_of`, and recount.

Why non-Hangul text encodes exactly as the base: every new token, and every token a new merge produces, contains
Hangul (byte-level bases: bytes that only occur inside Hangul characters). A new merge can only fire where its
result occurs in the text, so text without Hangul sees only base merges; new vocabulary entries that are never
formed change nothing. The one deliberate difference: the target normalises to NFC (the base does not), so
non-NFC input encodes as the base encodes its NFC form; NFC text is untouched.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from tokenizers import Tokenizer, trainers

from eeve.base_tokenizer import (
    BYTE_LEVEL_BPE,
    SP_BPE,
    BaseTokenizer,
    TokenizerBuildError,
    load_base,
    write_hf_folder,
)
from eeve.corpus import CorpusError, CorpusStats, iter_documents, resolve_paths
from eeve.token_counting import HANGUL_RANGES, Counts, count_tokens, has_hangul, is_hangul_char

__all__ = [
    "TokenizeConfig", "TokenizerBuildError", "bpe_pieces", "build_expanded_tokenizer", "run_from_config",
    "check_overrides", "compression_report", "load_base", "count_tokens",
]

_HANGUL_CLASS = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in HANGUL_RANGES)
SP_CANDIDATE = re.compile(f"^▁?[{_HANGUL_CLASS}]+$")
TEXT_CANDIDATE = re.compile(f"^ ?[{_HANGUL_CLASS}]+$")
BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


# ----------------------------------------------------------------------------------------------- config
@dataclass
class CorpusConfig:
    paths: list[str] = field(default_factory=lambda: [".cache/demo/ko/train.txt"])
    """Korean corpus files or globs (.txt: one document per line; .jsonl: one object per line; .gz ok)."""
    text_field: str = "text"
    """Key holding the text in .jsonl files."""


@dataclass
class HeldoutConfig:
    ko: Optional[str] = ".cache/demo/ko/heldout.txt"
    """Held-out Korean for the compression report (null to skip)."""
    en: Optional[str] = ".cache/demo/en/heldout.txt"
    """Held-out English for the compression report and the non-Hangul identity check (null to skip)."""


@dataclass
class CountConfig:
    tokenizer_dir: Optional[str] = None
    """mode=count: the tokenizer folder (or base) whose token frequencies to count."""
    shard_index: int = 0
    """mode=count: count files[shard_index::num_shards] of corpus.paths."""
    num_shards: int = 1
    out: Optional[str] = None
    """mode=count: .npz to write (default <hydra run dir>/counts_<i>of<n>.npz); sum shards with merge_counts."""


@dataclass
class TokenizeConfig:
    run_name: str = "demo"
    """Names the Hydra run folder outputs/tokenize/<run_name>."""
    mode: str = "build"
    """build: expand the tokenizer; count: only count token frequencies of one corpus shard."""
    base_tokenizer: str = ".cache/demo/base_tokenizer/tokenizer.model"
    """SentencePiece BPE .model, or a HF folder / tokenizer.json (SentencePiece-style or byte-level BPE)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    output_dir: Optional[str] = None
    """Where the expanded tokenizer folder goes (default: <hydra run dir>/tokenizer). Replaced only on success."""
    intermediate_vocab_size: int = 12000
    """Vocabulary of the intermediate Korean BPE (EEVE/SOLAR: 40000 on Korean web text)."""
    intermediate_max_mb: Optional[float] = None
    """Train the intermediate BPE on the first N MB of the corpus only (null: all of it); counting always reads all."""
    min_frequency: int = 10
    """Drop new tokens / skip single characters seen fewer times (EEVE: 6000 over ~100 GB)."""
    max_iterations: int = 10
    """Upper bound on the drop/add rounds (steps 3-6)."""
    vocab_multiple_of: int = 64
    """Final vocabulary size is a multiple of this (0 or 1: off), by dropping the rarest removable new tokens."""
    batch_bytes: int = 1 << 20
    """Characters per encode batch when counting (memory per batch, not per corpus)."""
    progress: bool = True
    """tqdm progress bars on stderr."""
    count: CountConfig = field(default_factory=CountConfig)


def _field_names(dc) -> dict[str, object]:
    return {f.name: f for f in fields(dc)}


def _resolve_key(key: str) -> str | None:
    """None if `key` (dotted) names a TokenizeConfig field, else a one-line error message."""
    dc = TokenizeConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = _field_names(dc)
        if part not in names:
            where = ".".join(parts[:i]) or "the tokenize config"
            close = difflib.get_close_matches(part, list(names), n=1)
            hint = f" (did you mean {'.'.join(parts[:i] + close)!r}?)" if close else ""
            return f"unknown config key {key!r} in {where}{hint}: valid keys are {', '.join(names)}"
        t = names[part].type
        sub = {"CorpusConfig": CorpusConfig, "HeldoutConfig": HeldoutConfig, "CountConfig": CountConfig}.get(str(t))
        if sub is None and is_dataclass(t):
            sub = t
        if sub is None:
            if i != len(parts) - 1:
                return f"config key {key!r}: {'.'.join(parts[: i + 1])!r} is a value, not a group"
            return None
        dc = sub
    return None


def check_overrides(argv: list[str]) -> str | None:
    """Validate Hydra command-line overrides against TokenizeConfig before Hydra sees them (Hydra's own messages
    span several lines). Returns a one-line error or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # noqa: BLE001 - hydra's OverrideParseException and friends
        return f"cannot parse command-line overrides ({str(e).splitlines()[0]}): write key=value, lists as key=[a,b]"
    for o in overrides:
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        err = _resolve_key(key)
        if err:
            return err
    return None


def to_config(cfg) -> TokenizeConfig:
    """Merge a DictConfig/dict onto the typed defaults; unknown keys or wrong types -> TokenizerBuildError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(TokenizeConfig), cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise TokenizerBuildError(f"bad config{f' key {key!r}' if key else ''}: {msg}") from None
    return obj


# ----------------------------------------------------------------------------------------------- BPE helpers
def bpe_pieces(tokenizer: Tokenizer, token: str) -> list[str]:
    """What the BPE model alone (no normalizer / pre-tokenizer) turns the token's own symbols into."""
    return [t.value for t in tokenizer.model.tokenize(token)]


_BYTES_TO_UNICODE: dict[int, str] | None = None


def byte_level_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's bytes <-> printable-characters table."""
    global _BYTES_TO_UNICODE
    if _BYTES_TO_UNICODE is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTES_TO_UNICODE = dict(zip(bs, map(chr, cs)))
    return _BYTES_TO_UNICODE, {v: k for k, v in _BYTES_TO_UNICODE.items()}


def token_bytes(token: str, kind: str) -> bytes:
    """The UTF-8 bytes a vocabulary entry stands for."""
    if kind == BYTE_LEVEL_BPE:
        _, dec = byte_level_alphabet()
        return bytes(dec[c] for c in token if c in dec)
    if BYTE_PIECE.match(token):
        return bytes([int(token[3:5], 16)])
    return token.replace("▁", " ").encode("utf-8")


def token_text(token: str, kind: str) -> str | None:
    """The text of a vocabulary entry, or None if its bytes are not complete UTF-8."""
    try:
        return token_bytes(token, kind).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _byte_implies_hangul(b: bytes) -> bool:
    """True if `b`, occurring anywhere in valid UTF-8 text, proves the text holds a Hangul (or unassigned) char."""
    if any(is_hangul_char(c) for c in b.decode("utf-8", errors="ignore")):
        return True
    for i, x in enumerate(b):
        if x in (0xEB, 0xEC, 0xED):  # lead bytes of U+B000-U+DFFF: all Hangul syllables / jamo (or unassigned)
            return True
        if i + 1 < len(b) and (x, b[i + 1] >> 6) == (0xEA, 2) and b[i + 1] >= 0xB0:  # U+AC00-U+AFFF
            return True
        if i + 1 < len(b) and x == 0xE1 and 0x84 <= b[i + 1] <= 0x87:  # U+1100-U+11FF jamo
            return True
    return False


def is_hangul_token(token: str, kind: str) -> bool:
    """Whether a (new) vocabulary entry can only ever be formed inside text that contains Hangul."""
    if kind == SP_BPE:
        return any(is_hangul_char(c) for c in token)
    return _byte_implies_hangul(token_bytes(token, kind))


def is_single_char(token: str, kind: str) -> bool:
    """One character: SentencePiece pieces of length 1, byte-level entries whose bytes are one UTF-8 character."""
    if kind == SP_BPE:
        return len(token) == 1
    text = token_text(token, kind)
    return text is not None and len(text) == 1


def char_token(c: str, kind: str) -> str:
    """The vocabulary entry of a single character."""
    if kind == SP_BPE:
        return c
    enc, _ = byte_level_alphabet()
    return "".join(enc[b] for b in c.encode("utf-8"))


def is_candidate(token: str, kind: str) -> bool:
    if kind == SP_BPE:
        return bool(SP_CANDIDATE.match(token))
    text = token_text(token, kind)
    return text is not None and bool(TEXT_CANDIDATE.match(text))


class BPESim:
    """A pure-Python BPE (same rule as `tokenizers`: lowest-rank pair first, leftmost on ties) over a vocab and
    merge ranks that grow as merges are appended; used to build and repair, cross-checked by the real model."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], kind: str):
        self.vocab = vocab
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.kind = kind

    def add_merge(self, a: str, b: str) -> None:
        self.ranks.setdefault((a, b), len(self.ranks))

    def initial(self, token: str) -> list[str]:
        out = []
        for c in token:
            if c in self.vocab:
                out.append(c)
            elif self.kind == SP_BPE:
                out.extend(f"<0x{x:02X}>" for x in c.encode("utf-8"))
            else:
                out.append(c)
        return out

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
    if base.kind == SP_BPE:
        tj = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {}, "merges": []},
        }
    else:
        tj = json.loads(json.dumps(base.tokenizer_json))
        tj.update(added_tokens=[], post_processor=None, decoder=None, truncation=None, padding=None)
        tj["normalizer"] = {"type": "NFC"}
        tj["model"].update(vocab={}, merges=[], ignore_merges=False, byte_fallback=False)
    return Tokenizer.from_str(json.dumps(tj))


def train_intermediate(base: BaseTokenizer, docs: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = intermediate_tokenizer(base)
    kw = {}
    if base.kind == BYTE_LEVEL_BPE:
        _, dec = byte_level_alphabet()
        kw["initial_alphabet"] = sorted(dec)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                                  max_token_length=16, **kw)
    tok.train_from_iterator(docs, trainer=trainer)
    m = json.loads(tok.to_str())["model"]
    merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    return m["vocab"], merges


def _closure(cands: list[str], inter_merge: dict[str, tuple[str, str]], base: BaseTokenizer) -> tuple[set[str], list[str]]:
    """New tokens needed for the candidates: candidates + their intermediate merge ancestors missing from the base.
    Ancestors that are not Hangul-only (byte-level bases: e.g. the last two bytes of a syllable) are left out
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
            if not is_hangul_token(t, base.kind):
                left_out.add(t)
                continue
            needed.add(t)
            if t in inter_merge:
                stack.extend(inter_merge[t])
    return needed, sorted(left_out)


def ensure_reachable(exp: Expansion, log: dict | None = None) -> list[str]:
    """Make every new token reachable by the bare BPE model (repair by appending left-to-right merges of its
    current segmentation, adding support tokens as needed); drop tokens that cannot be (non-Hangul support
    token needed). Cross-checked with the real `tokenizers` model. Returns the dropped tokens."""
    sim = exp.sim()
    vocab = sim.vocab
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
            if any(BYTE_PIECE.match(p) for p in pieces) or any(r not in vocab and not is_hangul_token(r, exp.base.kind) for *_, r in plan):
                dropped.append(t)  # a character missing from the vocab, or a support token that is not Hangul-only
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
        raise TokenizerBuildError(f"{len(bad)} new tokens unreachable after repair (e.g. {bad[:3]}): this is a bug, please report it")
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
    return Expansion(exp.base, exp.base_size, toks, merges)


def _count(exp_or_tok, paths, cfg: TokenizeConfig, base_dir, count_chars=False, stats=None) -> Counts:
    tok = exp_or_tok if isinstance(exp_or_tok, Tokenizer) else exp_or_tok.tokenizer()
    docs = iter_documents(paths, cfg.corpus.text_field, stats=stats, progress=cfg.progress, base_dir=base_dir)
    return count_tokens(tok, docs, batch_bytes=cfg.batch_bytes, count_chars=count_chars)


def _examples(tokens: Iterable[str], n: int = 8) -> list[str]:
    return list(tokens)[:n]


def build_expanded_tokenizer(base: BaseTokenizer, cfg: TokenizeConfig, base_dir: str | None = None, say=print) -> dict:
    """Run steps 1-7. Returns a dict with the Expansion, counts, iteration log and corpus stats."""
    paths = resolve_paths(cfg.corpus.paths, base_dir)
    stats = CorpusStats()
    seen_hangul = [False]

    limit = cfg.intermediate_max_mb * 1e6 if cfg.intermediate_max_mb else float("inf")

    def train_docs():
        for d in iter_documents(paths, cfg.corpus.text_field, stats=stats, progress=cfg.progress, base_dir=base_dir):
            if not seen_hangul[0] and has_hangul(d):
                seen_hangul[0] = True
            yield d
            if stats.text_bytes >= limit:
                break

    t0 = time.time()
    inter_vocab, inter_merges = train_intermediate(base, train_docs(), cfg.intermediate_vocab_size)
    if stats.documents == 0:
        raise CorpusError(f"corpus {cfg.corpus.paths} holds no documents (empty files or blank lines only): give non-empty Korean text")
    if not seen_hangul[0]:
        raise CorpusError(f"corpus {cfg.corpus.paths} contains no Hangul: EEVE expansion needs Korean text in corpus.paths")
    say(f"corpus{' (intermediate sample)' if stats.text_bytes >= limit else ''}: {len(paths)} files, {stats.documents:,} documents, {stats.text_bytes / 1e6:.2f} MB text"
        f"{f', {stats.invalid_utf8_lines} invalid UTF-8 lines skipped' if stats.invalid_utf8_lines else ''}")
    say(f"intermediate BPE: {len(inter_vocab):,} tokens, {len(inter_merges):,} merges ({time.time() - t0:.1f}s)")

    inter_rank = {a + b: r for r, (a, b) in enumerate(inter_merges)}
    inter_merge = {a + b: (a, b) for a, b in reversed(inter_merges)}  # first (lowest-rank) merge wins
    cands = sorted((t for t in inter_vocab if is_candidate(t, base.kind) and t not in base.vocab),
                   key=lambda t: (inter_rank.get(t, -1), t))
    needed, skipped = _closure(cands, inter_merge, base)
    say(f"candidates: {len(cands):,} Hangul tokens absent from the base ({len(needed) - len(set(cands) & needed):,} "
        f"ancestors added{f', {len(skipped)} non-Hangul ancestors left out' if skipped else ''})")
    base_size = base_vocab_size(base)
    order = sorted(needed, key=lambda t: (inter_rank.get(t, -1), t))  # single chars (rank -1) first
    have = needed | set(base.vocab)
    merges = [inter_merge[t] for t in order if t in inter_merge and set(inter_merge[t]) <= have]
    exp = Expansion(base, base_size, order, merges)
    log: dict = {}
    ensure_reachable(exp, log)

    iterations = []
    unaddable: set[str] = set()  # characters whose byte-level merges would need a non-Hangul support token
    counts = None
    char_counts = None
    m = cfg.min_frequency
    for it in range(1, cfg.max_iterations + 1):
        t1 = time.time()
        counts = _count(exp, paths, cfg, base_dir, count_chars=char_counts is None)
        if char_counts is None:
            char_counts = counts
        freq = {t: int(counts.tokens[base_size + i]) for i, t in enumerate(exp.new_tokens)}
        char_ok = lambda t: is_single_char(t, base.kind) and char_counts.char_count(token_text(t, base.kind)) >= m  # noqa: E731
        keep = {t for t, f in freq.items() if f >= m or char_ok(t)}
        keep |= required_ancestors(exp, keep)
        dropped = [t for t in exp.new_tokens if t not in keep]
        present = set(exp.vocab())
        added = [char_token(c, base.kind) for c in sorted(
            (chr(c + 0x1100) for c in np.nonzero(char_counts.chars >= m)[0] if is_hangul_char(chr(c + 0x1100))),
            key=lambda c: -char_counts.char_count(c)) if char_token(c, base.kind) not in present]
        added = [t for t in added if t not in unaddable]
        rec = {"iteration": it, "new_tokens": len(exp.new_tokens), "dropped": len(dropped), "added": len(added),
               "dropped_examples": _examples(sorted(dropped, key=lambda t: freq[t])),
               "added_examples": _examples(added), "seconds": round(time.time() - t1, 2)}
        iterations.append(rec)
        say(f"iteration {it}: {len(exp.new_tokens):,} new tokens counted, {len(dropped):,} below min_frequency={m} dropped, "
            f"{len(added):,} single characters added ({rec['seconds']}s)")
        if not dropped and not added:
            break
        exp = restrict(exp, keep, added)
        unaddable |= set(added) & set(ensure_reachable(exp, log))
    else:
        counts = _count(exp, paths, cfg, base_dir)
        say(f"max_iterations={cfg.max_iterations} reached before the vocabulary settled")

    # vocab size a multiple of vocab_multiple_of: drop the rarest removable new tokens
    mult = cfg.vocab_multiple_of
    trimmed: list[str] = []
    if mult and mult > 1:
        excess = (base_size + len(exp.new_tokens)) % mult
        if excess and excess > len(exp.new_tokens):
            say(f"warning: only {len(exp.new_tokens)} new tokens, cannot reach a multiple of {mult}")
            excess = 0
        freq = {t: int(counts.tokens[base_size + i]) for i, t in enumerate(exp.new_tokens)}
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
    return {"expansion": exp, "counts": counts, "char_counts": char_counts, "iterations": iterations, "stats": stats, "log": log,
            "trimmed": trimmed, "candidates": len(cands), "intermediate_vocab": len(inter_vocab), "skipped": skipped}


# ----------------------------------------------------------------------------------------------- report
def _read_lines(path: str | None, base_dir) -> list[str]:
    if not path:
        return []
    return list(iter_documents([path], base_dir=base_dir))


def compression_report(base_tok: Tokenizer, target: Tokenizer, kind: str, texts: dict[str, list[str]]) -> dict:
    """Characters per token and byte-fallback token rate, base vs target, per held-out language; plus how many
    lines without Hangul encode differently (must be 0)."""
    out: dict = {}
    for lang, lines in texts.items():
        if not lines:
            continue
        chars = sum(len(unicodedata.normalize("NFC", s)) for s in lines)
        row = {"lines": len(lines), "characters": chars}
        for name, tok in (("base", base_tok), ("expanded", target)):
            encs = tok.encode_batch_fast(lines, add_special_tokens=False)
            n = sum(len(e.ids) for e in encs)
            row[f"{name}_tokens"] = n
            row[f"{name}_chars_per_token"] = round(chars / max(n, 1), 4)
            if kind == SP_BPE:
                byte_ids = {i for t, i in tok.get_vocab().items() if BYTE_PIECE.match(t)}
                nb = sum(1 for e in encs for i in e.ids if i in byte_ids)
                row[f"{name}_byte_fallback_rate"] = round(nb / max(n, 1), 6)
        row["ratio"] = round(row["expanded_chars_per_token"] / max(row["base_chars_per_token"], 1e-9), 4)
        non_hangul = [s for s in ("".join(c for c in x if not is_hangul_char(c)) for x in lines) if s.strip()]
        a = base_tok.encode_batch_fast(non_hangul, add_special_tokens=False)
        b = target.encode_batch_fast(non_hangul, add_special_tokens=False)
        row["non_hangul_lines_checked"] = len(non_hangul)
        row["non_hangul_mismatches"] = sum(x.ids != y.ids for x, y in zip(a, b))
        out[lang] = row
    return out


# ----------------------------------------------------------------------------------------------- entry point
def _runtime_dirs() -> tuple[str, str]:
    """(the directory the user ran from, Hydra's run dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        rt = HydraConfig.get().runtime
        return rt.cwd, rt.output_dir
    except Exception:  # noqa: BLE001 - not under Hydra
        return os.getcwd(), os.getcwd()


DEMO_PREFIX = ".cache/demo/"


def _use_demo(cfg: TokenizeConfig) -> None:
    """Paths under .cache/demo/ (the defaults) point at `ensure_demo_data()` (fetched on first use; honours
    $EEVE_CACHE)."""
    if not any(str(p).startswith(DEMO_PREFIX) for p in [cfg.base_tokenizer, *cfg.corpus.paths, cfg.heldout.ko, cfg.heldout.en] if p):
        return
    from eeve.demo_data import ensure_demo_data

    demo = str(ensure_demo_data()) + "/"
    fix = lambda p: demo + p[len(DEMO_PREFIX):] if p and p.startswith(DEMO_PREFIX) else p  # noqa: E731
    cfg.base_tokenizer = fix(cfg.base_tokenizer)
    cfg.corpus.paths = [fix(p) for p in cfg.corpus.paths]
    cfg.heldout.ko, cfg.heldout.en = fix(cfg.heldout.ko), fix(cfg.heldout.en)


class _AtomicDir:
    """Build into a temp folder beside `target`; rename into place only on success."""

    def __init__(self, target: Path):
        self.target = target
        self.created: list[Path] = []
        p = target.parent
        missing = []
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                d.mkdir()
                self.created.append(d)
            self.tmp = Path(__import__("tempfile").mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as e:
            self.cleanup()
            raise TokenizerBuildError(f"output_dir {str(target)!r} is not writable ({e.strerror}): choose another output_dir") from None

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.rename(self.target, old)
        os.rename(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def cleanup(self) -> None:
        if getattr(self, "tmp", None) is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                pass


def run_from_config(dcfg) -> Path:
    """`python tokenize.py`: build (or count) and write the output folder atomically. Raises TokenizerBuildError /
    CorpusError with one-line messages on bad input."""
    cfg = to_config(dcfg)
    cwd, run_dir = _runtime_dirs()
    _use_demo(cfg)
    cfg.progress = cfg.progress and sys.stderr.isatty()  # bars only for humans: logs and errors stay clean
    if cfg.mode not in ("build", "count"):
        raise TokenizerBuildError(f"mode={cfg.mode!r} is unknown: use mode=build or mode=count")
    if cfg.intermediate_vocab_size < 256 or cfg.min_frequency < 1 or cfg.max_iterations < 1 or cfg.vocab_multiple_of < 0:
        raise TokenizerBuildError("need intermediate_vocab_size >= 256, min_frequency >= 1, max_iterations >= 1, vocab_multiple_of >= 0")
    if cfg.mode == "count":
        return _run_count(cfg, cwd, run_dir)
    base_path = cfg.base_tokenizer if os.path.isabs(os.path.expanduser(cfg.base_tokenizer)) else os.path.join(cwd, cfg.base_tokenizer)
    base = load_base(base_path)
    resolve_paths(cfg.corpus.paths, cwd)  # bad paths fail before any work
    out = Path(cfg.output_dir if cfg.output_dir else os.path.join(run_dir, "tokenizer"))
    if not out.is_absolute():
        out = Path(cwd) / out
    print(f"base: {base.source} ({base.kind}, {base_vocab_size(base):,} tokens, {len(base.merges):,} merges)")
    atomic = _AtomicDir(out)
    try:
        t0 = time.time()
        res = build_expanded_tokenizer(base, cfg, base_dir=cwd)
        exp: Expansion = res["expansion"]
        counts: Counts = res["counts"]
        target = exp.tokenizer()
        texts = {"ko": _read_lines(cfg.heldout.ko, cwd), "en": _read_lines(cfg.heldout.en, cwd)}
        comp = compression_report(base.tokenizer(), target, base.kind, texts)
        tmp = atomic.tmp
        write_hf_folder(exp.tokenizer_json(), base.config, tmp)
        write_hf_folder(base.tokenizer_json, base.config, tmp / "base_tokenizer")
        stats: CorpusStats = res["stats"]
        report = {
            "base_vocab_size": exp.base_size,
            "vocab_size": exp.base_size + len(exp.new_tokens),
            "base_kind": base.kind,
            "base_tokenizer": base.source,
            "num_new_tokens": len(exp.new_tokens),
            # frequency = times the token occurs in the expanded tokenization of the corpus; single characters also
            # carry char_frequency (occurrences of the character, inside longer tokens included: the card's rule)
            "new_tokens": [{"id": exp.base_size + i, "token": t, "frequency": int(counts.tokens[exp.base_size + i]),
                            **({"char_frequency": res["char_counts"].char_count(token_text(t, base.kind))}
                               if is_single_char(t, base.kind) else {})}
                           for i, t in enumerate(exp.new_tokens)],
            "new_merges": len(exp.new_merges),
            "iterations": res["iterations"],
            "trimmed_for_multiple": res["trimmed"],
            "repairs": res["log"].get("repaired", 0),
            "unreachable_dropped": res["log"].get("unreachable_dropped", []),
            "intermediate_vocab_size": res["intermediate_vocab"],
            "candidates": res["candidates"],
            "corpus": {"files": stats.files, "documents": counts.documents, "characters": counts.characters,
                       ("intermediate_sample_bytes" if cfg.intermediate_max_mb else "text_bytes"): stats.text_bytes,
                       "invalid_utf8_lines": stats.invalid_utf8_lines},
            "compression": comp,
            "normalizer": "NFC (the base has none: non-NFC input encodes as the base encodes its NFC form)",
            "config": asdict(cfg),
            "seconds": round(time.time() - t0, 1),
        }
        (tmp / "expansion.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        atomic.commit()
    except BaseException:
        atomic.cleanup()
        raise
    vs, mult = report["vocab_size"], cfg.vocab_multiple_of
    print(f"new tokens: {len(exp.new_tokens):,} -> vocab {vs:,}" + (f" (= {vs // mult} x {mult})" if mult > 1 and vs % mult == 0 else ""))
    for lang, row in comp.items():
        fb = f", byte fallback {row.get('base_byte_fallback_rate', 0):.2%} -> {row.get('expanded_byte_fallback_rate', 0):.2%}" if base.kind == SP_BPE else ""
        print(f"held-out {lang}: {row['base_chars_per_token']:.3f} -> {row['expanded_chars_per_token']:.3f} chars/token "
              f"(x{row['ratio']:.2f}){fb}; non-Hangul lines differing from base: {row['non_hangul_mismatches']}/{row['non_hangul_lines_checked']}")
    print(f"wrote {out} ({report['seconds']}s)")
    return out


def _run_count(cfg: TokenizeConfig, cwd: str, run_dir: str) -> Path:
    """mode=count: token + Hangul character counts of one shard of the corpus files (sum with merge_counts)."""
    c = cfg.count
    if not c.tokenizer_dir:
        raise TokenizerBuildError("mode=count needs count.tokenizer_dir=PATH (an expanded tokenizer folder)")
    if not 0 <= c.shard_index < c.num_shards:
        raise TokenizerBuildError(f"count.shard_index={c.shard_index} must be in [0, count.num_shards={c.num_shards})")
    tdir = c.tokenizer_dir if os.path.isabs(c.tokenizer_dir) else os.path.join(cwd, c.tokenizer_dir)
    tok = load_base(tdir).tokenizer() if not (Path(tdir) / "expansion.json").exists() else Tokenizer.from_file(str(Path(tdir) / "tokenizer.json"))
    files = resolve_paths(cfg.corpus.paths, cwd)[c.shard_index :: c.num_shards]
    out = Path(c.out) if c.out else Path(run_dir) / f"counts_{c.shard_index}of{c.num_shards}.npz"
    if not out.is_absolute():
        out = Path(cwd) / out
    docs = iter_documents(files, cfg.corpus.text_field, progress=cfg.progress)
    counts = count_tokens(tok, docs, batch_bytes=cfg.batch_bytes, count_chars=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    counts.save(tmp)
    os.replace(tmp, out)
    print(f"shard {c.shard_index}/{c.num_shards}: {len(files)} files, {counts.documents:,} documents, "
          f"{int(counts.tokens.sum()):,} tokens -> {out}")
    return out
