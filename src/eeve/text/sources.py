"""Where documents come from: one class per source format, chosen by file suffix or by the config's ``format``.

A *document* is
  - ``text``    (.txt, .txt.gz):     one non-empty line (the trailing newline removed, everything else kept);
  - ``jsonl``   (.jsonl, .jsonl.gz): the string under ``text_field`` of one JSON object per line;
  - ``parquet`` (.parquet), ``arrow`` (.arrow, or a ``Dataset.save_to_disk`` folder), ``json`` (.json: JSON Lines
    or one array): the ``text_field`` column of one row, read with Hugging Face ``datasets`` (streaming);
  - ``hub``: a ``datasets.load_dataset`` id (``paths`` holds ids), with ``split`` and ``name``; streamed, or read
    from the local ``datasets`` cache when ``HF_DATASETS_OFFLINE=1``.
Text is NFC-normalised on the way out: Llama/Mistral tokenizers do no normalisation, and decomposed Hangul (NFD
jamo) would otherwise explode into byte tokens. Blank documents are skipped.

Memory stays flat in corpus size: text files are read line by line, ``datasets`` sources in row batches.
A new format is one :class:`Source` subclass decorated with :func:`register`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Optional

from eeve.errors import CorpusError

ROW_BATCH = 1024
"""Rows per batch read from a ``datasets`` source (bounded memory, few Python round trips)."""


@dataclass
class CorpusStats:
    """What a pass over the corpus saw."""

    documents: int = 0
    bytes_read: int = 0  # on-disk bytes (compressed size for .gz; whole file for datasets formats)
    text_bytes: int = 0  # UTF-8 bytes of the documents after NFC
    invalid_utf8_lines: int = 0
    files: list[str] = field(default_factory=list)


@dataclass
class SourceOptions:
    """How to read the entries of one ``paths`` list."""

    text_field: str = "text"
    """Key (or column) holding the text in .jsonl, Parquet, Arrow, JSON and hub sources."""
    format: str = "auto"
    """auto (by suffix) | text | jsonl | parquet | arrow | json | hub (``paths`` are ``datasets.load_dataset`` ids)."""
    split: str = "train"
    """``format: hub``: the split to read."""
    name: Optional[str] = None
    """``format: hub``: the dataset's configuration name (load_dataset's ``name``)."""

    @classmethod
    def of(cls, cfg: Any) -> "SourceOptions":
        """The reading options of a config node (a :class:`DocumentSource` or a dict); missing keys default."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        return cls(
            text_field=get("text_field", "text") or "text",
            format=get("format", "auto") or "auto",
            split=get("split", "train") or "train",
            name=get("name", None),
        )


@dataclass(kw_only=True)
class DocumentSource(SourceOptions):
    """Where documents come from: ``paths`` and how to read them. The one schema of a source: the tokenizer corpus
    (``corpus``), the training sources (``data.sources.*``) and the validation sets (``data.validation.*``) extend
    it (eeve.config), and every reader takes it whole (:func:`eeve.text.corpus.iter_documents`), so no reader can
    drop a field."""

    paths: list[str]
    """Files or globs (.txt: one document per line; .jsonl: one JSON object per line; optionally .gz; .parquet,
    .arrow, .json or a ``save_to_disk`` folder: one row per document), or hub dataset ids with ``format: hub``.
    Relative ones resolve against the reader's ``base_dir``."""

    def options(self) -> SourceOptions:
        """The reading options alone (what every :class:`Source` of these paths holds)."""
        return SourceOptions.of(self)


Advance = Callable[[int], None]
"""Progress callback: bytes of the source just consumed."""

FORMATS: dict[str, type["Source"]] = {}


def register(cls: type["Source"]) -> type["Source"]:
    FORMATS[cls.format] = cls
    return cls


class Source:
    """One file (or one hub dataset) of documents."""

    format: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, location: str | Path, options: SourceOptions):
        self.location, self.options = location, options

    @classmethod
    def from_dir(cls, path: Path) -> list["Source"] | None:
        """The sources a folder stands for, if this format knows such folders (e.g. ``save_to_disk``)."""
        return None

    def size(self) -> int:
        """On-disk bytes, for the progress bar and ``CorpusStats.bytes_read`` (0 when unknown)."""
        return Path(self.location).stat().st_size

    def identity(self) -> str:
        """What the packed cache is keyed by: path, size and mtime of a file (content changes change the key)."""
        p = Path(self.location)
        st = p.stat()
        return f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0"

    def describe(self) -> dict:
        p = Path(self.location)
        return {"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}

    def documents(self, stats: CorpusStats, advance: Advance) -> Iterator[str]:
        raise NotImplementedError


def _accept(text: str, stats: CorpusStats) -> str | None:
    """NFC form of a non-blank document (counted in ``stats``), None for a blank one."""
    if not text.strip():
        return None
    nfc = unicodedata.normalize("NFC", text)
    stats.documents += 1
    stats.text_bytes += len(nfc.encode("utf-8"))
    return nfc


class _Lines(Source):
    """Line-oriented files, optionally gzipped; a line that is not valid UTF-8 is skipped and counted, never
    guessed at (a web crawl always holds a few, and refusing the whole corpus for them would cost a 100 GB run)."""

    is_json: ClassVar[bool] = False

    def documents(self, stats: CorpusStats, advance: Advance) -> Iterator[str]:
        path, text_field, is_json = Path(self.location), self.options.text_field, self.is_json
        raw = open(path, "rb")  # the raw file's position drives the byte progress bar
        stream = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
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
                        raise CorpusError(
                            f"{path}:{lineno} is not valid JSON ({e.msg}): fix or remove that line"
                        ) from None
                    if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                        raise CorpusError(
                            f"{path}:{lineno} has no string field {text_field!r}: set text_field to "
                            "the key holding the text"
                        )
                    text = obj[text_field]
                if not text.strip():
                    continue
                nfc = unicodedata.normalize("NFC", text)
                stats.documents += 1
                # normalize() returns its argument when already NFC: the byte count is then known for free
                stats.text_bytes += (
                    len(line.rstrip(b"\r\n")) if nfc is text and not is_json else len(nfc.encode("utf-8"))
                )
                if lineno % 1024 == 0:  # raw.tell() is a syscall: not per line
                    pos = raw.tell()
                    if pos - last >= 1 << 20:
                        advance(pos - last)
                        last = pos
                yield nfc
            pos = raw.tell()
            advance(pos - last)
            stats.bytes_read += pos


@register
class TextLines(_Lines):
    format, suffixes = "text", (".txt", ".txt.gz")


@register
class JsonLines(_Lines):
    format, suffixes, is_json = "jsonl", (".jsonl", ".jsonl.gz"), True


class _Datasets(Source):
    """A local file read with Hugging Face ``datasets`` in streaming mode: one row is one document."""

    builder: ClassVar[str]

    def _columns(self) -> list[str] | None:
        """Column names known without reading rows (None: learnt from the first batch)."""
        return None

    def _load(self):
        import datasets

        return datasets.load_dataset(self.builder, data_files=[str(self.location)], split="train", streaming=True)

    def documents(self, stats: CorpusStats, advance: Advance) -> Iterator[str]:
        field_ = self.options.text_field
        cols = self._columns()
        if cols is not None and field_ not in cols:
            raise CorpusError(
                f"{self.location} has no column {field_!r} (it has {', '.join(cols)}): set text_field "
                "to the column holding the text"
            )
        try:
            ds = self._load()
        except CorpusError:
            raise
        except Exception as e:  # datasets' messages span lines; the first names the problem
            raise CorpusError(f"cannot read {self.location} as {self.format} ({_first_line(e)})") from None
        yield from _rows(ds, field_, str(self.location), stats, advance, self.size())
        stats.bytes_read += self.size()


def _rows(ds, field_: str, where: str, stats: CorpusStats, advance: Advance, size: int) -> Iterator[str]:
    """Documents of the ``field_`` column of a (streaming or memory-mapped) dataset, in Arrow batches (several
    times faster than ``datasets``' per-row Python dicts)."""
    import pyarrow as pa

    done = 0
    for batch in ds.with_format("arrow").iter(batch_size=ROW_BATCH):
        if field_ not in batch.column_names:
            raise CorpusError(
                f"{where} has no column {field_!r} (it has {', '.join(batch.column_names)}): set "
                "text_field to the column holding the text"
            )
        col = batch.column(field_)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise CorpusError(
                f"{where} column {field_!r} holds {col.type}, not text: set text_field to a string column"
            )
        texts = col.to_pylist()
        for text in texts:
            if text is None:
                continue
            doc = _accept(text, stats)
            if doc is not None:
                yield doc
        if size:  # rows carry no byte offsets: advance by text read, never past the file
            step = min(size - done, sum(len(t) for t in texts if t is not None))
            advance(step)
            done += step
    if size > done:
        advance(size - done)


@register
class Parquet(_Datasets):
    format, suffixes, builder = "parquet", (".parquet",), "parquet"

    def _columns(self) -> list[str]:
        import pyarrow.parquet as pq

        return list(pq.read_schema(self.location).names)

    def _load(self):
        import datasets

        # read only the text column: web corpora carry many metadata columns
        return datasets.load_dataset(
            "parquet", data_files=[str(self.location)], split="train", streaming=True, columns=[self.options.text_field]
        )


@register
class Arrow(_Datasets):
    """Arrow IPC files, as ``Dataset.save_to_disk`` writes them (a folder of those is accepted whole)."""

    format, suffixes, builder = "arrow", (".arrow",), "arrow"

    @classmethod
    def from_dir(cls, path: Path) -> list[Source] | None:
        state = path / "state.json"
        if not state.is_file():
            return None
        files = [path / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        return [cls(f, SourceOptions()) for f in files]


@register
class Json(_Datasets):
    format, suffixes, builder = "json", (".json",), "json"


@register
class Hub(Source):
    """A ``datasets.load_dataset`` id: streamed (memory flat), or with ``HF_DATASETS_OFFLINE=1`` read from the
    local ``datasets`` cache (memory-mapped Arrow, also flat). Keyed by id, name and split."""

    format = "hub"

    def size(self) -> int:
        return 0

    def identity(self) -> str:
        o = self.options
        return f"hub:{self.location}\0{o.name}\0{o.split}\0"

    def describe(self) -> dict:
        return {"path": f"hub:{self.location}", "name": self.options.name, "split": self.options.split}

    def documents(self, stats: CorpusStats, advance: Advance) -> Iterator[str]:
        import datasets

        o = self.options
        offline = bool(datasets.config.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE)
        try:
            ds = datasets.load_dataset(str(self.location), name=o.name, split=o.split, streaming=not offline)
        except Exception as e:  # noqa: BLE001 - any failure to reach or find the dataset gets the same advice
            raise CorpusError(
                f"cannot load hub dataset {self.location!r} (name={o.name}, split={o.split}): {_first_line(e)}; "
                "without network, either set HF_DATASETS_OFFLINE=1 with a datasets cache filled by the same "
                "load_dataset call on a connected machine, or save the data as local Parquet/Arrow/JSON files and "
                "give their paths"
            ) from None
        yield from _rows(ds, o.text_field, f"hub dataset {self.location!r}", stats, advance, 0)


def _first_line(e: Exception) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__


def _by_suffix(path: Path) -> type[Source] | None:
    name = str(path)
    for cls in FORMATS.values():
        if cls.suffixes and name.endswith(cls.suffixes):
            return cls
    return None


def _suffix_list() -> str:
    return ", ".join(s for c in FORMATS.values() for s in c.suffixes)


def open_sources(
    patterns: DocumentSource | Iterable[str | os.PathLike | Source] | str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    options: SourceOptions | None = None,
    key: str = "corpus.paths",
) -> list[Source]:
    """The sources of a :class:`DocumentSource` (its paths, read with its options) or of a ``paths`` list with
    ``options``: files and globs (relative ones against ``base_dir``) expanded into a sorted, de-duplicated list,
    each read by the class its suffix (or ``options.format``) names; with ``format=hub`` each entry is a dataset
    id. Entries that already are :class:`Source` objects pass through. ``key``: the config key the paths came
    from, named in errors (``data.sources.ko_web.paths``)."""
    if isinstance(patterns, DocumentSource):
        if options is not None:
            raise TypeError("open_sources: give a DocumentSource or paths with options, not both")
        patterns, options = patterns.paths, patterns.options()
    options = options or SourceOptions()
    if isinstance(patterns, (str, os.PathLike, Source)):
        patterns = [patterns]
    if options.format != "auto" and options.format not in FORMATS:
        raise CorpusError(f"format={options.format!r} is unknown: use auto (by suffix) or one of {', '.join(FORMATS)}")
    if options.format == "hub":
        return [p if isinstance(p, Source) else Hub(str(p), options) for p in patterns]
    forced = FORMATS.get(options.format)
    out: list[Source] = []
    for pattern in patterns:
        if isinstance(pattern, Source):
            out.append(pattern)
            continue
        p = Path(os.path.expanduser(str(pattern)))
        if base_dir is not None and not p.is_absolute():
            p = Path(base_dir) / p
        if glob.has_magic(str(p)):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                raise CorpusError(f"corpus glob {pattern!r} matches no file: fix the pattern in {key}")
        elif p.is_file():
            matches = [p]
        elif p.is_dir():
            kinds = [forced] if forced else FORMATS.values()
            found = next((s for c in kinds if (s := c.from_dir(p)) is not None), None)
            if found is None:
                raise CorpusError(
                    f"corpus path {pattern!r} is a directory: give files or a glob such as '{pattern}/*.txt' in {key}"
                )
            out.extend(type(s)(s.location, options) for s in found)
            continue
        else:
            hint = "" if _by_suffix(p) else " (a Hugging Face dataset id? set format=hub)"
            raise CorpusError(f"corpus file {pattern!r} does not exist: fix {key} (files or globs){hint}")
        for m in matches:
            cls = forced or _by_suffix(m)
            if cls is None:
                raise CorpusError(
                    f"corpus file {str(m)!r} has an unsupported extension: use one of {_suffix_list()} (or set format)"
                )
            out.append(cls(m, options))
    seen: set[str] = set()
    return [s for s in out if not (str(s.location) in seen or seen.add(str(s.location)))]
