"""Streaming corpus reader shared by the tokenizer builder and the data module.

What a document is in each format (.txt, .jsonl, Parquet, Arrow, JSON, Hugging Face hub ids) is the business of
:mod:`eeve.text.sources` (one class per format); this module walks a ``paths`` list through them with one progress
bar over bytes, and groups documents into batches for parallel encoding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from eeve.text.sources import CorpusStats, DocumentSource, Source, SourceOptions, open_sources

__all__ = ["CorpusStats", "DocumentSource", "SourceOptions", "iter_batches", "iter_documents", "resolve_paths"]


def resolve_paths(
    patterns: Iterable[str | os.PathLike],
    base_dir: str | os.PathLike | None = None,
    options: SourceOptions | None = None,
) -> list[Path]:
    """Expand files and globs (relative ones against `base_dir`) into a sorted, de-duplicated file list
    (checked: each exists and has a known format)."""
    return [Path(s.location) for s in open_sources(patterns, base_dir, options)]


def iter_documents(
    paths: DocumentSource | Iterable[str | os.PathLike | Source],
    stats: CorpusStats | None = None,
    progress: bool = False,
    base_dir: str | os.PathLike | None = None,
    options: SourceOptions | None = None,
) -> Iterator[str]:
    """Yield NFC documents from every source in order: those of a :class:`DocumentSource` (a config's corpus,
    training source or validation set: paths, text_field, format, split, name), or of a paths list read with
    ``options`` (default: by suffix, field ``text``). Raises CorpusError on a bad JSON line, a missing field or
    column, or an unreachable hub dataset."""
    sources = open_sources(paths, base_dir, options)
    stats = stats if stats is not None else CorpusStats()
    total = sum(s.size() for s in sources)
    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="corpus", disable=not progress, mininterval=1.0)
    try:
        for source in sources:
            stats.files.append(str(source.location))
            yield from source.documents(stats, bar.update)
    finally:
        bar.close()


def iter_batches(documents: Iterable[str], batch_bytes: int = 4 << 20) -> Iterator[list[str]]:
    """Group documents into lists of about `batch_bytes` characters: big enough for parallel batch encoding,
    small enough that memory does not grow with the corpus."""
    batch: list[str] = []
    size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
