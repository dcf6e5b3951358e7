"""Packing: a source's documents tokenized with the expanded tokenizer into fixed-length sequences, cached on disk
as memory-mapped token ids (see eeve.data.datamodule's docstring for the layout and the cache key)."""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from eeve.errors import CorpusError
from eeve.io import atomic_dir
from eeve.text.corpus import CorpusStats, iter_batches, iter_documents
from eeve.text.sources import Source, SourceOptions, open_sources
from eeve.tokenizer.info import TokenizerInfo

T = TypeVar("T")

FORMAT_VERSION = 1
"""Bump when the packed-cache layout or the packing rule changes (invalidates every cache)."""

ENCODE_BATCH_BYTES = 1 << 20
"""Characters of text per ``encode_batch`` call while packing: thousands of documents, enough to keep every core
busy (the tokenizer parallelises over documents), while memory stays a few batches."""


@dataclass
class Packed:
    """An opened packed cache."""

    name: str
    path: Path
    tokens: np.memmap  # [n, seq_len]
    new_counts: np.ndarray  # [n] uint32 (memmap)
    meta: dict

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


def cache_key(tok: TokenizerInfo, sources: list[Source], seq_len: int, text_field: str) -> str:
    """Hash of everything a packed cache depends on: tokenizer, seq_len, text field and each source's identity
    (a file's path, size and mtime; a hub dataset's id, name and split)."""
    h = hashlib.sha256()
    h.update(f"eeve-packed-v{FORMAT_VERSION}\0{tok.hash}\0{int(seq_len)}\0{text_field}\0".encode())
    for s in sources:
        h.update(s.identity().encode())
    return h.hexdigest()[:24]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "source"


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead: reading and NFC (Python, holding the GIL)
    overlap with ``encode_batch`` (Rust on every core, GIL released). Exceptions reach the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def run() -> None:
        try:
            for x in items:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((end, e))

    worker = threading.Thread(target=run, name="eeve-pack-reader", daemon=True)
    worker.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        worker.join()


def pack_source(
    name: str,
    paths: list[str],
    options: SourceOptions | str,
    tok: TokenizerInfo,
    seq_len: int,
    cache_dir: Path,
    base_dir: Path | None,
    progress: bool = False,
) -> tuple[Path, bool]:
    """Tokenize and pack one source into its cache folder unless present. Returns (folder, built_now).

    Several processes (ranks, nodes on a shared filesystem, concurrent jobs) asking for the same cache: one
    builds it under a file lock, the others wait on the lock and then read it. ``options``: a
    :class:`SourceOptions` (format, split, name, text_field) or just the text field."""
    if isinstance(options, str):
        options = SourceOptions(text_field=options)
    sources = open_sources(paths, base_dir, options)
    key = cache_key(tok, sources, seq_len, options.text_field)
    final = Path(cache_dir) / "packed" / f"{_slug(name)}-{key}"
    if (final / "meta.json").is_file():
        return final, False
    locks = Path(cache_dir) / "packed-locks"  # beside packed/, which holds caches only
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{final.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"[data] {name}: another process is packing it ({final.name}); waiting for it", file=sys.stderr, flush=True
        )
        lock.acquire()
    try:
        if (final / "meta.json").is_file():  # built while this process waited
            return final, False
        _build(name, sources, options.text_field, tok, seq_len, key, final, progress)
        return final, True
    finally:
        lock.release()


def _build(
    name: str,
    sources: list[Source],
    text_field: str,
    tok: TokenizerInfo,
    seq_len: int,
    key: str,
    final: Path,
    progress: bool,
) -> None:
    t0 = time.time()
    # keep_existing: a filesystem without working locks can still let two builders race; the first rename wins
    with atomic_dir(final, keep_existing=True) as tmp:
        stats = CorpusStats()
        buf = np.empty(0, dtype=np.int64)
        n_seq = n_tokens = n_new = 0
        base = tok.base_vocab_size
        with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "new_counts.bin", "wb") as fn:
            docs = iter_documents(sources, stats=stats, progress=progress)
            for batch in prefetch(iter_batches(docs, ENCODE_BATCH_BYTES)):
                flat = tok.encode_flat(batch)
                n_tokens += len(flat)
                buf = np.concatenate([buf, flat]) if len(buf) else flat
                k = len(buf) // seq_len
                if k:
                    seqs = buf[: k * seq_len].reshape(k, seq_len)
                    counts = (seqs >= base).sum(axis=1).astype(np.uint32)
                    ft.write(seqs.astype(tok.dtype).tobytes())
                    fn.write(counts.tobytes())
                    n_seq += k
                    n_new += int(counts.sum())
                    buf = buf[k * seq_len :].copy()
        where = [str(s.location) for s in sources]
        if stats.documents == 0:
            raise CorpusError(f"data source {name!r} has no documents in {where}: give non-empty files")
        if n_seq == 0:
            raise CorpusError(
                f"data source {name!r} yields {n_tokens} tokens, fewer than one sequence of seq_len={seq_len}: "
                "give more text or lower data.seq_len"
            )
        meta = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "key": key,
            "n_sequences": n_seq,
            "seq_len": int(seq_len),
            "dtype": np.dtype(tok.dtype).name,
            "documents": stats.documents,
            "text_bytes": stats.text_bytes,
            "tokens_total": n_tokens,
            "tokens_dropped_tail": n_tokens - n_seq * seq_len,
            "new_tokens": n_new,
            "base_vocab_size": base,
            "tokenizer_sha256": tok.hash,
            "text_field": text_field,
            "files": [s.describe() for s in sources],
            "invalid_utf8_lines": stats.invalid_utf8_lines,
            "seconds": round(time.time() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def open_packed(folder: Path) -> Packed:
    meta = json.loads((folder / "meta.json").read_text())
    n, t = int(meta["n_sequences"]), int(meta["seq_len"])
    tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n, t))
    counts = np.memmap(folder / "new_counts.bin", dtype=np.uint32, mode="r", shape=(n,))
    return Packed(meta["name"], folder, tokens, counts, meta)
