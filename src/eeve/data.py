"""Training data for EEVE: packed, cached, mixture-sampled token sequences biased toward new tokens.

Pipeline
  1. ``prepare_data`` (Lightning runs it once per node): every training source and every validation language is
     read with :mod:`eeve.corpus` (NFC, streaming), tokenized with the *expanded* tokenizer in batches
     (``encode_batch``; each document becomes BOS + ids + EOS as the tokenizer's post-processor and special
     tokens dictate), concatenated and cut into sequences of exactly ``seq_len`` tokens (the tail is dropped).
     The result is written streamingly (memory does not grow with the corpus) into
     ``<cache_dir>/packed/<name>-<key>/`` as ``tokens.bin`` (raw uint16 when the vocabulary has < 65536 ids,
     else uint32; shape [n_sequences, seq_len]), ``new_counts.bin`` (uint32 per sequence: how many of its tokens
     are new, i.e. id >= ``expansion.json``'s ``base_vocab_size``) and ``meta.json``. The folder is built under a
     temporary name and renamed into place, so a crash never leaves a half cache. The key hashes the
     tokenizer.json bytes, each file's (absolute path, size, mtime), ``seq_len``, ``text_field`` and
     :data:`FORMAT_VERSION`: change any and the source is re-tokenized; otherwise it is reused.
  2. ``setup`` opens the caches as read-only ``np.memmap`` (building any that are missing, e.g. when called
     without ``prepare_data``) and prints the new-token share of the training stream with and without bias.

Sampling (training)
  Global sample ``i`` (0, 1, 2, ...) is a pure function of ``(seed, i)``: samples are drawn in blocks of
  :data:`BLOCK` with ``np.random.default_rng([seed, block])`` — first the source (by the normalised ``ratio``),
  then a sequence of that source, i.i.d. with replacement, with probability

      p(sequence j)  ∝  exp(new_token_bias × share_j),   share_j = new_counts[j] / seq_len

  (``new_token_bias = 0`` is uniform). The weighting is bounded: a sequence made only of new tokens is at most
  ``e^bias`` times likelier than one without any, so the bias never collapses onto a handful of outliers. The
  share, not a has-any flag, is used because in Korean text nearly every sequence contains some new token.
  Rank ``r`` of ``W`` takes global samples ``r, r+W, r+2W, ...`` of its window, so the ranks together see exactly
  the single-process stream, disjointly. The sampler shards itself: build the Trainer with
  ``use_distributed_sampler=False`` (see :data:`TRAINER_KWARGS`); ``train_dataloader`` refuses otherwise.

Resume
  ``state_dict()`` (saved by Lightning into every checkpoint) holds ``consumed_samples`` = ``sample_offset +
  trainer.global_step × samples_per_step`` where ``samples_per_step = micro_batch_size × world_size ×
  accumulate_grad_batches``; after ``load_state_dict`` the train loader starts at that global sample, so a
  resumed run sees exactly the continuation of the uninterrupted stream (also when the world size or gradient
  accumulation changed: the offset is re-based on the restored ``global_step``). Each new training iterator
  starts at the current position, so it does not matter whether Lightning resumes mid-epoch or opens a new
  epoch. The train DataLoader is a :class:`ResumableLoader` so Lightning does not warn about an unresumable
  loader. ``sample_offset`` (settable, also via ``configure_sampling``) lets a later stage continue the stream
  of the previous one instead of replaying it.

Length
  With ``trainer.max_steps > 0`` one "epoch" covers exactly ``max_steps × samples_per_step`` global samples
  (plus the offset), so the sampler and ``max_steps`` end together. Without ``max_steps`` an epoch is the number
  of packed training sequences (rounded down to whole steps) and ``set_epoch`` moves to the next window of the
  same infinite stream.

Validation
  One dataloader per language in ``cfg.validation`` order (``val_names``), the first ``max_sequences`` packed
  held-out sequences, truncated to a multiple of the world size so every rank runs the same number of batches,
  rank ``r`` taking sequences ``r, r+W, ...``; never shuffled.

Bits per byte
  ``token_bytes[v]`` is the number of UTF-8 bytes token ``v`` decodes to (SentencePiece style: ``▁`` is one byte,
  ``<0xNN>`` byte-fallback pieces one byte; byte-level BPE: one byte per symbol after the inverse GPT-2
  byte-to-unicode map; special tokens 0). In SentencePiece style the sum over a document's ids is
  ``len(doc.encode()) + 1`` (the ``▁`` prepended to the first word).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from eeve.corpus import CorpusError, CorpusStats, iter_batches, iter_documents, resolve_paths
from eeve.tokenizer_build import byte_level_alphabet

FORMAT_VERSION = 1
"""Bump when the packed-cache layout or the packing rule changes (invalidates every cache)."""

BLOCK = 4096
"""Global samples drawn per RNG block: block b uses ``np.random.default_rng([seed, b])``."""

TRAINER_KWARGS = {"use_distributed_sampler": False}
"""Trainer arguments this data module needs (its sampler shards by rank itself)."""

ENCODE_BATCH_BYTES = 1 << 20
"""Characters of text per ``encode_batch`` call while packing (bounds memory)."""


# --------------------------------------------------------------------------------------------------- config
@dataclass
class SourceConfig:
    """One training source of the mixture."""

    paths: list[str]
    """Files or globs (``.txt``: one document per line; ``.jsonl``: one JSON object per line; optionally ``.gz``).
    Relative ones resolve against the data module's ``base_dir``."""
    ratio: float
    """Mixture weight (normalised over all sources): the expected fraction of training sequences from here."""
    text_field: str = "text"
    """Key of the document text in ``.jsonl`` files."""
    lang: str | None = None
    """Language tag, informational (e.g. ``ko``, ``en``, ``en-ko``)."""


@dataclass
class ValConfig:
    """Held-out text for one validation language."""

    paths: list[str]
    """Files or globs, as for :class:`SourceConfig`."""
    text_field: str = "text"
    """Key of the document text in ``.jsonl`` files."""
    max_sequences: int = 64
    """Use at most this many packed sequences (over all ranks)."""


@dataclass
class DataConfig:
    """The ``data`` config group (``conf/data/*.yaml``)."""

    seq_len: int = 2048
    """Tokens per packed sequence (the model sees ``seq_len`` inputs and predicts ``seq_len - 1`` of them)."""
    micro_batch_size: int = 1
    """Sequences per batch per device."""
    num_workers: int = 0
    """DataLoader worker processes per device."""
    new_token_bias: float = 1.0
    """Sampling strength toward sequences rich in new tokens: weight ∝ exp(bias × new-token share); 0 = uniform."""
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    """Training mixture: name -> source."""
    validation: dict[str, ValConfig] = field(default_factory=dict)
    """Validation sets: language -> held-out text; one dataloader each, in this order."""
    seed: int = 0
    """Sampling seed (the data module's ``seed`` argument overrides it when given)."""

    @classmethod
    def from_any(cls, obj: Any) -> "DataConfig":
        """Build from a DataConfig, a dict or an OmegaConf DictConfig (resolved); rejects unknown keys."""
        if isinstance(obj, DataConfig):
            obj.validate()
            return obj
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(obj, DictConfig):
                obj = OmegaConf.to_container(obj, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(obj, Mapping):
            raise CorpusError(f"data config must be a mapping, got {type(obj).__name__}")
        d = dict(obj)
        _check_keys(cls, d, "data config")
        d["sources"] = {k: _sub(SourceConfig, k, v) for k, v in (d.get("sources") or {}).items()}
        d["validation"] = {k: _sub(ValConfig, k, v) for k, v in (d.get("validation") or {}).items()}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if int(self.seq_len) < 2:
            raise CorpusError(f"data.seq_len must be >= 2, got {self.seq_len}")
        if int(self.micro_batch_size) < 1:
            raise CorpusError(f"data.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if not self.sources:
            raise CorpusError("data.sources is empty: give at least one training source with paths and ratio")
        for name, s in self.sources.items():
            if not (isinstance(s.ratio, (int, float)) and s.ratio >= 0 and math.isfinite(s.ratio)):
                raise CorpusError(f"data.sources.{name}.ratio must be a finite number >= 0, got {s.ratio!r}")
        if sum(s.ratio for s in self.sources.values()) <= 0:
            raise CorpusError("data.sources ratios sum to 0: give at least one source a positive ratio")
        if not math.isfinite(self.new_token_bias):
            raise CorpusError(f"data.new_token_bias must be finite, got {self.new_token_bias}")


def _check_keys(cls, d: Mapping, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CorpusError(f"{where} has unknown key(s) {unknown}: valid keys are {sorted(known)}")


def _sub(cls, name: str, v: Any):
    if isinstance(v, cls):
        return v
    if not isinstance(v, Mapping):
        raise CorpusError(f"data source/validation {name!r} must be a mapping with paths, got {v!r}")
    v = dict(v)
    _check_keys(cls, v, f"data entry {name!r}")
    paths = v.get("paths")
    if paths is None or paths == "???" or (isinstance(paths, (list, tuple)) and (not paths or "???" in paths)):
        raise CorpusError(f"data entry {name!r} has no paths: set data.…{name}.paths=[FILES] on the command line")
    v["paths"] = [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]
    return cls(**v)


# ------------------------------------------------------------------------------------------------ tokenizer
class TokenizerInfo:
    """What the data side needs from an expanded tokenizer folder."""

    def __init__(self, tokenizer_dir: Path):
        from tokenizers import Tokenizer

        self.dir = Path(tokenizer_dir)
        tj = self.dir / "tokenizer.json"
        if not tj.is_file():
            raise CorpusError(f"tokenizer folder {str(self.dir)!r} has no tokenizer.json: run tokenize.py first")
        self.json_bytes = tj.read_bytes()
        self.hash = hashlib.sha256(self.json_bytes).hexdigest()
        self.tok = Tokenizer.from_str(self.json_bytes.decode("utf-8"))
        self.spec = json.loads(self.json_bytes)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        exp_path = self.dir / "expansion.json"
        self.expansion = json.loads(exp_path.read_text()) if exp_path.is_file() else {}
        self.base_vocab_size = int(self.expansion.get("base_vocab_size", self.vocab_size))
        self.padded_vocab_size = max(self.vocab_size, int(self.expansion.get("vocab_size", 0) or 0))
        self.dtype = np.uint16 if self.padded_vocab_size <= 1 << 16 else np.uint32

        cfg = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            p = self.dir / name
            if p.is_file():
                for k, v in json.loads(p.read_text()).items():
                    cfg.setdefault(k, v)

        def tid(key: str) -> int | None:
            v = cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return self.tok.token_to_id(v) if isinstance(v, str) else None

        self.bos_id, self.eos_id = tid("bos_token"), tid("eos_token")
        probe = self.tok.encode("a", add_special_tokens=True).ids
        plain = self.tok.encode("a", add_special_tokens=False).ids
        # Only add BOS/EOS where the post-processor did not already.
        self.add_bos = self.bos_id is not None and probe[:1] != [self.bos_id]
        self.add_eos = self.eos_id is not None and probe[-1:] != [self.eos_id]
        self.post_adds = len(probe) - len(plain)

    def encode_docs(self, docs: list[str]) -> list[list[int]]:
        """BOS + ids + EOS for each document."""
        out = []
        pre = [self.bos_id] if self.add_bos else []
        post = [self.eos_id] if self.add_eos else []
        for enc in self.tok.encode_batch(docs, add_special_tokens=True):
            out.append(pre + enc.ids + post)
        return out

    def token_bytes(self) -> torch.Tensor:
        """UTF-8 bytes each id decodes to (length ``padded_vocab_size``; padding ids 0)."""
        out = np.zeros(self.padded_vocab_size, dtype=np.int64)
        model = self.spec.get("model", {})
        vocab = model.get("vocab", {})
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            vocab = {p[0]: i for i, p in enumerate(vocab)}
        byte_level = _is_byte_level(self.spec)
        byte_fallback = bool(model.get("byte_fallback", False))
        inv = byte_level_alphabet()[1]  # printable character -> byte
        special = {t["id"] for t in self.spec.get("added_tokens", []) if t.get("special")}
        for piece, i in vocab.items():
            if i >= len(out) or i in special:
                continue
            if byte_level:
                out[i] = sum(1 if ch in inv else len(ch.encode("utf-8")) for ch in piece)
            elif byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                out[i] = 1
            else:
                out[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
        for t in self.spec.get("added_tokens", []):
            if t["id"] < len(out):
                out[t["id"]] = 0 if t.get("special") else len(t["content"].encode("utf-8"))
        return torch.from_numpy(out)


def _is_byte_level(spec: dict) -> bool:
    def has(node) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                return True
            return any(has(v) for v in node.values())
        if isinstance(node, list):
            return any(has(v) for v in node)
        return False

    return has(spec.get("pre_tokenizer")) or has(spec.get("decoder"))


# ----------------------------------------------------------------------------------------------- packing
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


def cache_key(tok: TokenizerInfo, files: list[Path], seq_len: int, text_field: str) -> str:
    h = hashlib.sha256()
    h.update(f"eeve-packed-v{FORMAT_VERSION}\0{tok.hash}\0{int(seq_len)}\0{text_field}\0".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:24]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "source"


def pack_source(
    name: str,
    paths: list[str],
    text_field: str,
    tok: TokenizerInfo,
    seq_len: int,
    cache_dir: Path,
    base_dir: Path | None,
    progress: bool = False,
) -> tuple[Path, bool]:
    """Tokenize and pack one source into its cache folder unless present. Returns (folder, built_now)."""
    files = resolve_paths(paths, base_dir)
    key = cache_key(tok, files, seq_len, text_field)
    root = Path(cache_dir) / "packed"
    final = root / f"{_slug(name)}-{key}"
    if (final / "meta.json").is_file():
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_slug(name)}-{key}-", dir=root))
    t0 = time.time()
    try:
        stats = CorpusStats()
        buf = np.empty(0, dtype=np.int64)
        n_seq = n_tokens = n_new = 0
        base = tok.base_vocab_size
        with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "new_counts.bin", "wb") as fn:
            docs = iter_documents(files, text_field=text_field, stats=stats, progress=progress)
            for batch in iter_batches(docs, ENCODE_BATCH_BYTES):
                ids = tok.encode_docs(batch)
                flat = np.fromiter((t for d in ids for t in d), dtype=np.int64, count=sum(len(d) for d in ids))
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
        if stats.documents == 0:
            raise CorpusError(f"data source {name!r} has no documents in {[str(f) for f in files]}: give non-empty files")
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
            "files": [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files],
            "invalid_utf8_lines": stats.invalid_utf8_lines,
            "seconds": round(time.time() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a lost race with another process: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return final, False
        return final, True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_packed(folder: Path) -> Packed:
    meta = json.loads((folder / "meta.json").read_text())
    n, t = int(meta["n_sequences"]), int(meta["seq_len"])
    tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n, t))
    counts = np.memmap(folder / "new_counts.bin", dtype=np.uint32, mode="r", shape=(n,))
    return Packed(meta["name"], folder, tokens, counts, meta)


# ---------------------------------------------------------------------------------------------- sampling
class MixtureStream:
    """The infinite global stream of training samples: ``flat_index(i)`` for global sample numbers ``i``.

    Flat index = ``offsets[source] + row``. Pure function of (seed, i) given the packed data and the bias.
    """

    def __init__(self, ratios: list[float], new_shares: list[np.ndarray], bias: float, seed: int):
        r = np.asarray(ratios, dtype=np.float64)
        self.ratios = r / r.sum()
        self.sizes = [len(s) for s in new_shares]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.bias = float(bias)
        self.seed = int(seed)
        self.probs: list[np.ndarray | None] = []
        self.cdfs: list[np.ndarray | None] = []
        for share in new_shares:
            if self.bias == 0.0:
                self.probs.append(None)
                self.cdfs.append(None)
                continue
            logw = self.bias * share.astype(np.float64)
            w = np.exp(logw - logw.max())
            p = w / w.sum()
            self.probs.append(p)
            cdf = np.cumsum(p)
            cdf[-1] = 1.0
            self.cdfs.append(cdf)
        self._cache: tuple[int, np.ndarray] | None = None

    def block(self, b: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == b:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, int(b)])
        src = rng.choice(len(self.ratios), size=BLOCK, p=self.ratios)
        u = rng.random(BLOCK)  # one uniform per sample: row = inverse CDF (or floor(u * n) when unbiased)
        out = np.empty(BLOCK, dtype=np.int64)
        for s in range(len(self.ratios)):
            m = src == s
            if not m.any():
                continue
            if self.cdfs[s] is None:
                rows = np.minimum((u[m] * self.sizes[s]).astype(np.int64), self.sizes[s] - 1)
            else:
                rows = np.minimum(np.searchsorted(self.cdfs[s], u[m], side="right"), self.sizes[s] - 1)
            out[m] = self.offsets[s] + rows
        self._cache = (b, out)
        return out

    def flat_indices(self, start: int, stop: int, step: int = 1) -> np.ndarray:
        idx = np.arange(start, stop, step, dtype=np.int64)
        if len(idx) == 0:
            return idx
        out = np.empty(len(idx), dtype=np.int64)
        blocks = idx // BLOCK
        for b in np.unique(blocks):
            m = blocks == b
            out[m] = self.block(int(b))[idx[m] % BLOCK]
        return out

    def source_of(self, flat: np.ndarray | int) -> np.ndarray:
        return np.searchsorted(self.offsets, flat, side="right") - 1


class GlobalStreamSampler(Sampler[int]):
    """Yields flat sequence indices for this rank's share of a window of the global stream.

    Window: ``[origin, origin + epoch_samples)`` when ``single_window`` (training driven by ``max_steps``), else
    epoch ``e`` covers ``[origin + e·epoch_samples, origin + (e+1)·epoch_samples)``. Each new iterator starts at
    ``max(window start, start_fn())`` — the global sample where training actually is (``trainer.global_step ×
    samples_per_step``), so a restored run continues exactly where the checkpoint left off. Rank ``r`` of
    ``world_size`` takes the global samples ``≡ r (mod world_size)``. ``len()`` is the whole window of this rank
    (Lightning counts batches from the start of the epoch, also after a mid-epoch resume); an iterator created
    after a resume yields only the remainder.
    """

    def __init__(self, stream: MixtureStream, epoch_samples: int, rank: int = 0, world_size: int = 1,
                 origin: int = 0, start_fn=None, single_window: bool = False):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} / world_size {world_size}")
        if origin % world_size or epoch_samples % world_size:
            raise ValueError("origin and epoch_samples must be multiples of world_size")
        self.stream = stream
        self.epoch_samples = int(epoch_samples)
        self.rank, self.world_size = int(rank), int(world_size)
        self.origin = int(origin)
        self.start_fn = start_fn if start_fn is not None else (lambda: self.origin)
        self.single_window = bool(single_window)
        self.epoch = 0
        self.first = self.origin  # global sample the current iterator started at
        self.yielded = 0  # samples of this rank handed out by the current iterator

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def window(self) -> tuple[int, int]:
        lo = self.origin + (0 if self.single_window else self.epoch * self.epoch_samples)
        return lo, lo + self.epoch_samples

    def _first(self) -> int:
        lo, hi = self.window()
        start = int(self.start_fn())
        start -= start % self.world_size
        return max(lo, min(start, hi))

    def global_indices(self) -> np.ndarray:
        """Global sample numbers the next iterator yields on this rank."""
        _, hi = self.window()
        return np.arange(self._first() + self.rank, hi, self.world_size, dtype=np.int64)

    def __len__(self) -> int:
        return self.epoch_samples // self.world_size

    def __iter__(self) -> Iterator[int]:
        _, hi = self.window()
        first = self.first = self._first()
        self.yielded = 0
        chunk = BLOCK * self.world_size
        for a in range(first, hi, chunk):
            flat = self.stream.flat_indices(a + self.rank, min(a + chunk, hi), self.world_size)
            for f in flat.tolist():
                self.yielded += 1
                yield f


# ----------------------------------------------------------------------------------------------- datasets
class PackedDataset(Dataset):
    """Flat index over the concatenation of packed caches -> {"input_ids": LongTensor[seq_len]}.

    Memmaps are opened lazily in each process (workers re-open them instead of pickling the arrays)."""

    def __init__(self, folders: list[Path], rows: np.ndarray | None = None):
        self.folders = [Path(f) for f in folders]
        self.rows = rows  # optional explicit list of flat rows (validation slices)
        metas = [json.loads((f / "meta.json").read_text()) for f in self.folders]
        self.sizes = [int(m["n_sequences"]) for m in metas]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._packed: list[Packed] | None = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_packed"] = None
        return d

    def _open(self) -> list[Packed]:
        if self._packed is None:
            self._packed = [open_packed(f) for f in self.folders]
        return self._packed

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else int(self.offsets[-1])

    def get_flat(self, flat: int) -> np.ndarray:
        s = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return self._open()[s].tokens[flat - self.offsets[s]]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        flat = int(self.rows[i]) if self.rows is not None else int(i)
        return {"input_ids": torch.from_numpy(np.asarray(self.get_flat(flat), dtype=np.int64))}


class ResumableLoader(DataLoader):
    """A DataLoader Lightning treats as resumable (``state_dict``/``load_state_dict``). The position itself is
    owned by the data module (derived from ``trainer.global_step``); this only records it for inspection."""

    def __init__(self, *args, position_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._position_fn = position_fn

    def state_dict(self) -> dict[str, Any]:
        return {"consumed_samples": int(self._position_fn()) if self._position_fn else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the sampler starts from the data module's position (see EEVEDataModule.load_state_dict)


# ------------------------------------------------------------------------------------------- data module
class EEVEDataModule(L.LightningDataModule):
    """Packed, cached, new-token-biased mixture for EEVE stages (see the module docstring).

    Args:
      cfg: the ``data`` config (DataConfig, dict or DictConfig).
      tokenizer_dir: the expanded tokenizer folder (``tokenizer.json`` + ``expansion.json``).
      cache_dir: where packed caches live (``<cache_dir>/packed/``).
      base_dir: relative source/tokenizer/cache paths resolve here (pass Hydra's original cwd). When None, Hydra's
        ``runtime.cwd`` is used if Hydra is running; otherwise relative paths are an error.
      seed: sampling seed; None = ``cfg.seed``.
      rank, world_size: for use without a Trainer (with one attached, the trainer's values win).
      sample_offset: global sample number this run's stream starts at (e.g. the previous stage's consumed
        samples); restored from checkpoints.
      num_samples: global samples per epoch when not driven by ``trainer.max_steps``.
    Attributes (after ``setup``): ``val_names``, ``token_bytes`` (LongTensor[V]), ``vocab_size``,
      ``base_vocab_size``, ``train_sources`` (name -> Packed memmaps), ``val_sets``, ``stream``.
    """

    trainer_kwargs = TRAINER_KWARGS

    def __init__(self, cfg: Any, tokenizer_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                 base_dir: str | os.PathLike | None = None, seed: int | None = None, *, rank: int = 0,
                 world_size: int = 1, sample_offset: int = 0, num_samples: int | None = None,
                 progress: bool = False):
        super().__init__()
        self.cfg = DataConfig.from_any(cfg)
        self.base_dir = Path(base_dir) if base_dir is not None else _hydra_cwd()
        self.tokenizer_dir = self._abs(tokenizer_dir, "tokenizer_dir")
        self.cache_dir = self._abs(cache_dir, "cache_dir")
        self.seed = int(self.cfg.seed if seed is None else seed)
        self._rank, self._world = int(rank), int(world_size)
        self.sample_offset = int(sample_offset)
        self.num_samples = num_samples
        self.progress = progress
        self.val_names: list[str] = list(self.cfg.validation)
        self.built: list[str] = []  # names packed (tokenized) by this instance — cache misses
        self._tok: TokenizerInfo | None = None
        self._folders: dict[str, Path] = {}
        self.train_sources: dict[str, Packed] = {}
        self.val_sets: dict[str, Packed] = {}
        self.stream: MixtureStream | None = None
        self._train_sampler: GlobalStreamSampler | None = None
        self._resume_consumed: int | None = None
        self._token_bytes: torch.Tensor | None = None
        self._max_steps: int | None = None
        self._accumulate = 1

    def configure_sampling(self, max_steps: int | None = None, world_size: int | None = None,
                           accumulate_grad_batches: int | None = None, sample_offset: int | None = None) -> None:
        """Tell the module the run's shape before a Trainer is attached (an attached Trainer's values win):
        ``max_steps`` sizes the sampler window (``max_steps × samples_per_step`` global samples),
        ``sample_offset`` the global sample the run starts at (e.g. a previous stage's consumed samples)."""
        if max_steps is not None:
            self._max_steps = int(max_steps)
        if world_size is not None:
            self._world = int(world_size)
            if not 0 <= self._rank < self._world:
                self._rank = 0
        if accumulate_grad_batches is not None:
            self._accumulate = int(accumulate_grad_batches)
        if sample_offset is not None:
            self.sample_offset = int(sample_offset)

    @property
    def token_bytes(self) -> torch.Tensor:
        """LongTensor[vocab_size]: UTF-8 bytes each token id decodes to (special and padding ids 0)."""
        if self._token_bytes is None:
            self._token_bytes = self.tokenizer.token_bytes()
        return self._token_bytes

    # -- paths / tokenizer
    def _abs(self, p: str | os.PathLike, what: str) -> Path:
        p = Path(os.path.expanduser(str(p)))
        if p.is_absolute():
            return p
        if self.base_dir is None:
            raise CorpusError(f"{what} {str(p)!r} is relative and no base_dir was given: pass base_dir (Hydra's original cwd)")
        return self.base_dir / p

    def _base_for_sources(self) -> Path | None:
        return self.base_dir

    @property
    def tokenizer(self) -> TokenizerInfo:
        if self._tok is None:
            self._tok = TokenizerInfo(self.tokenizer_dir)
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.padded_vocab_size

    @property
    def base_vocab_size(self) -> int:
        return self.tokenizer.base_vocab_size

    def _entries(self) -> list[tuple[str, str, list[str], str]]:
        """(kind, name, paths, text_field) for every source and validation set."""
        out = [("train", n, s.paths, s.text_field) for n, s in self.cfg.sources.items()]
        out += [("val", n, v.paths, v.text_field) for n, v in self.cfg.validation.items()]
        return out

    def _check_relative(self, paths: list[str], name: str) -> None:
        if self.base_dir is None:
            for p in paths:
                if not Path(os.path.expanduser(p)).is_absolute():
                    raise CorpusError(f"data entry {name!r} path {p!r} is relative and no base_dir was given: pass base_dir")

    def _ensure(self) -> None:
        for kind, name, paths, field_ in self._entries():
            key = f"{kind}:{name}"
            if key in self._folders:
                continue
            self._check_relative(paths, name)
            folder, built = pack_source(f"{kind}-{name}", paths, field_, self.tokenizer, self.cfg.seq_len,
                                        self.cache_dir, self.base_dir, progress=self.progress)
            if built:
                self.built.append(key)
                meta = json.loads((folder / "meta.json").read_text())
                rank_zero_info(f"[data] packed {key}: {meta['documents']} docs -> {meta['n_sequences']} x {meta['seq_len']} "
                               f"tokens in {meta['seconds']} s ({folder})")
            self._folders[key] = folder

    # -- Lightning hooks
    def prepare_data(self) -> None:
        self._ensure()

    def setup(self, stage: str | None = None) -> None:
        if self.stream is not None:
            return
        self._ensure()
        self.train_sources = {n: open_packed(self._folders[f"train:{n}"]) for n in self.cfg.sources}
        self.val_sets = {n: open_packed(self._folders[f"val:{n}"]) for n in self.cfg.validation}
        T = self.cfg.seq_len
        shares = [np.asarray(p.new_counts, dtype=np.float64) / T for p in self.train_sources.values()]
        self._shares = shares
        self.stream = MixtureStream([s.ratio for s in self.cfg.sources.values()], shares, self.cfg.new_token_bias, self.seed)
        rank_zero_info(self.describe())

    def describe(self) -> str:
        """One paragraph: sources, sizes, new-token share unbiased vs biased."""
        lines = [f"[data] seq_len={self.cfg.seq_len} vocab={self.vocab_size} (base {self.base_vocab_size}) "
                 f"new_token_bias={self.cfg.new_token_bias} seed={self.seed}"]
        for (n, p), r, sh in zip(self.train_sources.items(), self.stream.ratios, self._shares):
            lines.append(f"[data]   {n}: {p.n} sequences, ratio {r:.4f}, new-token share {sh.mean():.4f}")
        lines.append(f"[data] new-token share of training tokens: unbiased {self.new_token_share(False):.4f}, "
                     f"biased {self.new_token_share(True):.4f}")
        return "\n".join(lines)

    def new_token_share(self, biased: bool = True) -> float:
        """Expected fraction of training tokens that are new (id >= base_vocab_size), exact under the sampling
        weights (``biased=True``: with ``new_token_bias``; False: uniform within each source)."""
        if self.stream is None:
            self.setup()
        total = 0.0
        for s, share in enumerate(self._shares):
            p = self.stream.probs[s]
            within = float(share.mean()) if (not biased or p is None) else float(np.dot(p, share))
            total += self.stream.ratios[s] * within
        return total

    # -- distributed / resume bookkeeping
    def _dist(self) -> tuple[int, int, int]:
        """(rank, world_size, accumulate_grad_batches)."""
        t = self._trainer_or_none()
        if t is not None:
            return int(t.global_rank), int(t.world_size), int(getattr(t, "accumulate_grad_batches", 1) or 1)
        return self._rank, self._world, self._accumulate

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

    @property
    def samples_per_step(self) -> int:
        _, world, acc = self._dist()
        return self.cfg.micro_batch_size * world * acc

    def consumed_samples(self) -> int:
        """Global samples consumed so far (by all ranks) — where a restart must continue."""
        t = self._trainer_or_none()
        if t is not None:
            return self.sample_offset + int(t.global_step) * self.samples_per_step
        s = self._train_sampler
        if s is None:
            return self._resume_consumed if self._resume_consumed is not None else self.sample_offset
        # without a trainer: what the current iterator handed out on this rank, in whole global batches
        return s.first + (s.yielded // self.cfg.micro_batch_size) * self.cfg.micro_batch_size * s.world_size

    def state_dict(self) -> dict[str, Any]:
        t = self._trainer_or_none()
        return {
            "consumed_samples": int(self.consumed_samples()),
            "sample_offset": int(self.sample_offset),
            "global_step": int(t.global_step) if t is not None else None,
            "samples_per_step": int(self.samples_per_step),
            "seed": self.seed,
            "format_version": FORMAT_VERSION,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "consumed_samples" not in state:
            return
        if int(state.get("seed", self.seed)) != self.seed:
            rank_zero_info(f"[data] checkpoint seed {state.get('seed')} != {self.seed}: the stream continues with {self.seed}")
        consumed = int(state["consumed_samples"])
        self._resume_consumed = consumed
        t = self._trainer_or_none()
        if t is not None and state.get("global_step") is not None:
            # continue at `consumed` even if samples_per_step changed (other world size / accumulation):
            # start = sample_offset + global_step × samples_per_step must equal `consumed` at the restored step
            self.sample_offset = consumed - int(state["global_step"]) * self.samples_per_step
        else:
            self.sample_offset = int(state.get("sample_offset", 0))

    # -- loaders
    def _epoch_samples(self) -> int:
        sps = self.samples_per_step
        t = self._trainer_or_none()
        if t is not None and t.max_steps is not None and t.max_steps > 0:
            return int(t.max_steps) * sps
        if self._max_steps is not None and self._max_steps > 0:
            return self._max_steps * sps
        if self.num_samples is not None:
            return max(sps, (int(self.num_samples) // sps) * sps)
        total = sum(p.n for p in self.train_sources.values())
        return max(sps, (total // sps) * sps)

    def train_dataloader(self) -> DataLoader:
        if self.stream is None:
            self.setup("fit")
        rank, world, _ = self._dist()
        t = self._trainer_or_none()
        if t is not None and world > 1 and getattr(t._accelerator_connector, "use_distributed_sampler", False):
            raise RuntimeError("EEVEDataModule shards by rank itself: build the Trainer with use_distributed_sampler=False")
        origin = self.sample_offset - self.sample_offset % world
        single = (t is not None and t.max_steps is not None and t.max_steps > 0) or (
            t is None and self._max_steps is not None and self._max_steps > 0)
        self._train_sampler = GlobalStreamSampler(self.stream, self._epoch_samples(), rank, world, origin=origin,
                                                  start_fn=self._start_position, single_window=single)
        folders = [self._folders[f"train:{n}"] for n in self.cfg.sources]
        return ResumableLoader(PackedDataset(folders), batch_size=self.cfg.micro_batch_size,
                               sampler=self._train_sampler, drop_last=True, num_workers=self.cfg.num_workers,
                               persistent_workers=self.cfg.num_workers > 0, pin_memory=torch.cuda.is_available(),
                               position_fn=self.consumed_samples)

    def _start_position(self) -> int:
        """Global sample a new training iterator starts at: where training is now."""
        t = self._trainer_or_none()
        if t is not None:
            return self.sample_offset + int(t.global_step) * self.samples_per_step
        if self._resume_consumed is not None:
            return self._resume_consumed
        return self.sample_offset

    def val_rows(self, name: str) -> np.ndarray:
        """Rows of validation set ``name`` this rank evaluates."""
        rank, world, _ = self._dist()
        p = self.val_sets[name]
        n = min(p.n, int(self.cfg.validation[name].max_sequences))
        n -= n % world
        if n == 0:
            raise CorpusError(f"validation set {name!r} has {p.n} sequences, fewer than the {world} ranks: give more held-out text")
        return np.arange(rank, n, world, dtype=np.int64)

    def val_dataloader(self) -> list[DataLoader]:
        if self.stream is None:
            self.setup("validate")
        out = []
        for name in self.val_names:
            ds = PackedDataset([self._folders[f"val:{name}"]], rows=self.val_rows(name))
            out.append(DataLoader(ds, batch_size=self.cfg.micro_batch_size, shuffle=False, num_workers=0))
        return out


def _hydra_cwd() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except Exception:  # pragma: no cover
        pass
    return None
