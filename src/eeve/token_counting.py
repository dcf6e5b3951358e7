"""Token and Hangul-character frequencies over a corpus, in one streaming pass.

`count_tokens(tokenizer, docs)` encodes byte-bounded batches with the tokenizer's parallel `encode_batch_fast`
(Rust threads, GIL released) while a reader thread prepares the next batch, and adds each batch into a numpy
bincount: memory is one batch plus a `vocab_size` array, whatever the corpus size. Counts are plain sums, so
counting shards separately and adding the arrays (`merge_counts`) equals one pass over everything.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer

from eeve.corpus import iter_batches

# Hangul code points: syllables, jamo, compatibility jamo, jamo extended A and B
HANGUL_RANGES = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


def is_hangul_char(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in HANGUL_RANGES)


def has_hangul(text: str) -> bool:
    return any(is_hangul_char(c) for c in text)


@dataclass
class Counts:
    """token counts (len = vocab size) and Hangul character counts (indexed by code point - 0x1100)."""

    tokens: np.ndarray
    chars: np.ndarray | None = None
    documents: int = 0
    characters: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        chars = None if self.chars is None or other.chars is None else self.chars + other.chars
        return Counts(self.tokens + other.tokens, chars, self.documents + other.documents, self.characters + other.characters)

    def char_count(self, c: str) -> int:
        return int(self.chars[ord(c) - CHAR_BASE]) if self.chars is not None and CHAR_BASE <= ord(c) < CHAR_END else 0

    def save(self, path: str | Path) -> None:
        np.savez(path, tokens=self.tokens, chars=self.chars if self.chars is not None else np.zeros(0, np.int64),
                 meta=np.array([self.documents, self.characters], np.int64))

    @classmethod
    def load(cls, path: str | Path) -> "Counts":
        z = np.load(path)
        chars = z["chars"] if z["chars"].size else None
        return cls(z["tokens"], chars, int(z["meta"][0]), int(z["meta"][1]))


CHAR_BASE, CHAR_END = 0x1100, 0xD800  # one array covers every Hangul range (about 200 KB of int32... int64)


def _prefetch(it: Iterable, depth: int = 2) -> Iterator:
    """Run `it` in a background thread, `depth` items ahead (reading + NFC overlap with Rust encoding)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    err: list[BaseException] = []

    def work():
        try:
            for x in it:
                q.put(x)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            err.append(e)
        finally:
            q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while True:
        x = q.get()
        if x is done:
            break
        yield x
    t.join()
    if err:
        raise err[0]


def hangul_char_counts(batch: list[str]) -> np.ndarray:
    """Counts of every code point in [CHAR_BASE, CHAR_END) over the batch (vectorised, via UTF-32)."""
    cps = np.frombuffer("".join(batch).encode("utf-32-le"), dtype=np.uint32)
    cps = cps[(cps >= CHAR_BASE) & (cps < CHAR_END)] - CHAR_BASE
    return np.bincount(cps, minlength=CHAR_END - CHAR_BASE).astype(np.int64)


def count_tokens(
    tokenizer: Tokenizer,
    docs: Iterable[str],
    batch_bytes: int = 1 << 20,
    count_chars: bool = False,
    prefetch: bool = True,
) -> Counts:
    """Frequency of every token id (no special tokens added) over `docs`; optionally Hangul character counts."""
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    total = np.zeros(vocab_size, dtype=np.int64)
    chars = np.zeros(CHAR_END - CHAR_BASE, dtype=np.int64) if count_chars else None
    ndocs = nchars = 0

    def absorb(fut, batch):
        nonlocal total, chars, ndocs, nchars
        encs = fut.result()
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)
        total += np.bincount(ids, minlength=vocab_size)[:vocab_size]
        if chars is not None:
            chars += hangul_char_counts(batch)
        ndocs += len(batch)
        nchars += sum(map(len, batch))

    batches = iter_batches(docs, batch_bytes)
    # pipeline: Rust encodes batch k+1 (GIL released) while Python bincounts batch k; a reader thread prepares k+2
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in _prefetch(batches) if prefetch else batches:
            fut = pool.submit(tokenizer.encode_batch_fast, batch, add_special_tokens=False)
            if pending is not None:
                absorb(*pending)
            pending = (fut, batch)
        if pending is not None:
            absorb(*pending)
    return Counts(total, chars, ndocs, nchars)


def merge_counts(parts: Iterable[Counts | str | Path]) -> Counts:
    """Sum of shard counts (Counts objects or `.npz` files written by `Counts.save`)."""
    out = None
    for p in parts:
        c = p if isinstance(p, Counts) else Counts.load(p)
        out = c if out is None else out + c
    if out is None:
        raise ValueError("merge_counts needs at least one shard")
    return out
