"""Streaming corpus reader shared by the tokenizer builder and the data module.

A *document* is
  - in a `.txt` file: one non-empty line (the trailing newline removed, everything else kept);
  - in a `.jsonl` file: the string under `text_field` of one JSON object per line.
Either may be gzip-compressed (`.txt.gz`, `.jsonl.gz`). Text is NFC-normalised on the way out: Llama/Mistral
tokenizers do no normalisation, and decomposed Hangul (NFD jamo) would otherwise explode into byte tokens.

Lines that are not valid UTF-8 are skipped and counted (`CorpusStats.invalid_utf8_lines`), never guessed at:
a web crawl always holds a few, and refusing the whole corpus for them would cost a 100 GB run.
Memory stays flat in corpus size: files are read line by line and batches are bounded in bytes.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from eeve.errors import CorpusError


@dataclass
class CorpusStats:
    """What a pass over the corpus saw."""

    documents: int = 0
    bytes_read: int = 0  # on-disk bytes (compressed size for .gz)
    text_bytes: int = 0  # UTF-8 bytes of the documents after NFC
    invalid_utf8_lines: int = 0
    files: list[str] = field(default_factory=list)


SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")


def resolve_paths(patterns: Iterable[str | os.PathLike], base_dir: str | os.PathLike | None = None) -> list[Path]:
    """Expand files and globs (relative ones against `base_dir`) into a sorted, de-duplicated file list."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    out: list[Path] = []
    for pattern in patterns:
        p = Path(os.path.expanduser(str(pattern)))
        if base_dir is not None and not p.is_absolute():
            p = Path(base_dir) / p
        if glob.has_magic(str(p)):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                raise CorpusError(f"corpus glob {pattern!r} matches no file: fix the pattern in corpus.paths")
            out.extend(matches)
        elif p.is_file():
            out.append(p)
        elif p.is_dir():
            raise CorpusError(f"corpus path {pattern!r} is a directory: give files or a glob such as '{pattern}/*.txt'")
        else:
            raise CorpusError(f"corpus file {pattern!r} does not exist: fix corpus.paths (files or globs)")
    for p in out:
        if not str(p).endswith(SUFFIXES):
            raise CorpusError(f"corpus file {str(p)!r} has an unsupported extension: use one of {', '.join(SUFFIXES)}")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _open_binary(path: Path):
    """(line iterator over bytes, raw file) — the raw file's position drives the byte progress bar."""
    raw = open(path, "rb")
    return (gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw), raw


def iter_documents(
    paths: Iterable[str | os.PathLike],
    text_field: str = "text",
    stats: CorpusStats | None = None,
    progress: bool = False,
    base_dir: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Yield NFC documents from every file in order. Raises CorpusError on a bad JSON line or missing field."""
    files = resolve_paths(paths, base_dir)
    stats = stats if stats is not None else CorpusStats()
    total = sum(p.stat().st_size for p in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="corpus", disable=not progress, mininterval=1.0)
    try:
        for path in files:
            stats.files.append(str(path))
            is_json = ".jsonl" in path.name
            stream, raw = _open_binary(path)
            last = 0
            with raw, stream:
                for lineno, line in enumerate(stream, 1):
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError:
                        stats.invalid_utf8_lines += 1
                        continue
                    text = text.rstrip("\r\n")
                    if is_json:
                        if not text.strip():
                            continue
                        try:
                            obj = json.loads(text)
                        except json.JSONDecodeError as e:
                            raise CorpusError(f"{path}:{lineno} is not valid JSON ({e.msg}): fix or remove that line") from None
                        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                            raise CorpusError(
                                f"{path}:{lineno} has no string field {text_field!r}: set text_field to the key holding the text"
                            )
                        text = obj[text_field]
                    if not text.strip():
                        continue
                    nfc = unicodedata.normalize("NFC", text)
                    stats.documents += 1
                    # normalize() returns its argument when already NFC: the byte count is then known for free
                    stats.text_bytes += len(line.rstrip(b"\r\n")) if nfc is text and not is_json else len(nfc.encode("utf-8"))
                    if progress and lineno % 1024 == 0:  # raw.tell() is a syscall: not per line
                        pos = raw.tell()
                        if pos - last >= 1 << 20:
                            bar.update(pos - last)
                            last = pos
                    yield nfc
                pos = raw.tell()
                bar.update(pos - last)
                stats.bytes_read += pos
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
