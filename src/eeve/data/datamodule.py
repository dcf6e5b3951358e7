"""Training data for EEVE: packed, cached, mixture-sampled token sequences biased toward new tokens.

Pipeline
  1. ``prepare_data`` (Lightning runs it once per node): every training source and every validation language is
     read with :mod:`eeve.text.corpus` (NFC, streaming; .txt, .jsonl, Parquet, Arrow, JSON, hub ids), tokenized
     with the *expanded* tokenizer in batches (``encode_batch``; each document becomes BOS + ids + EOS as the
     tokenizer's post-processor and special tokens dictate), concatenated and cut into sequences of exactly
     ``seq_len`` tokens (the tail is dropped).
     Packing runs once per cache: concurrent processes (ranks, nodes on a shared filesystem, jobs) take a file
     lock, one builds and the others wait; reading overlaps encoding, which uses every core.
     The result is written streamingly (memory does not grow with the corpus) into
     ``<cache_dir>/packed/<name>-<key>/`` as ``tokens.bin`` (raw uint16 when the vocabulary has < 65536 ids,
     else uint32; shape [n_sequences, seq_len]), ``new_counts.bin`` (uint32 per sequence: how many of its tokens
     are new, i.e. id >= ``expansion.json``'s ``base_vocab_size``) and ``meta.json``. The folder is built under a
     temporary name and renamed into place, so a crash never leaves a half cache. The key hashes the
     tokenizer.json bytes, each file's (absolute path, size, mtime) or hub dataset's (id, name, split),
     ``seq_len``, ``text_field`` and :data:`FORMAT_VERSION`: change any and the source is re-tokenized; otherwise
     it is reused.
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
  ``use_distributed_sampler=False``; ``train_dataloader`` refuses otherwise.

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
  ``len(doc.encode()) + 1`` (the ``▁`` prepended to the first word). Validation scores text tokens only (targets
  with ``token_bytes > 0``): the BOS/EOS between packed documents are trained on, not measured.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from eeve.config import DataConfig, to_object
from eeve.data.packing import FORMAT_VERSION, Packed, open_packed, pack_source
from eeve.data.sampling import BLOCK, GlobalStreamSampler, MixtureStream, PackedDataset, ResumableLoader
from eeve.errors import CorpusError
from eeve.text.sources import SourceOptions
from eeve.tokenizer.info import TokenizerInfo, tokenizer_info


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
      progress: a progress bar over bytes while packing (None: when stderr is a terminal).
    Attributes (after ``setup``): ``val_names``, ``token_bytes`` (LongTensor[V]), ``vocab_size``,
      ``base_vocab_size``, ``train_sources`` (name -> Packed memmaps), ``val_sets``, ``stream``.
    """

    def __init__(
        self,
        cfg: Any,
        tokenizer_dir: str | os.PathLike,
        cache_dir: str | os.PathLike,
        base_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        sample_offset: int = 0,
        num_samples: int | None = None,
        progress: bool | None = None,
    ):
        super().__init__()
        self.cfg = to_object(DataConfig, cfg)
        self.base_dir = Path(base_dir) if base_dir is not None else _hydra_cwd()
        self.tokenizer_dir = self._abs(tokenizer_dir, "tokenizer_dir")
        self.cache_dir = self._abs(cache_dir, "cache_dir")
        self.seed = int(self.cfg.seed if seed is None else seed)
        self._rank, self._world = int(rank), int(world_size)
        self.sample_offset = int(sample_offset)
        self.num_samples = num_samples
        self.progress = sys.stderr.isatty() if progress is None else progress  # a bar over bytes while packing
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

    def configure_sampling(
        self,
        max_steps: int | None = None,
        world_size: int | None = None,
        accumulate_grad_batches: int | None = None,
        sample_offset: int | None = None,
    ) -> None:
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
            self._token_bytes = torch.from_numpy(self.tokenizer.token_bytes())
        return self._token_bytes

    # -- paths / tokenizer
    def _abs(self, p: str | os.PathLike, what: str) -> Path:
        p = Path(os.path.expanduser(str(p)))
        if p.is_absolute():
            return p
        if self.base_dir is None:
            raise CorpusError(
                f"{what} {str(p)!r} is relative and no base_dir was given: pass base_dir (Hydra's original cwd)"
            )
        return self.base_dir / p

    @property
    def tokenizer(self) -> TokenizerInfo:
        if self._tok is None:
            self._tok = tokenizer_info(self.tokenizer_dir)
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.padded_vocab_size

    @property
    def base_vocab_size(self) -> int:
        return self.tokenizer.base_vocab_size

    def _entries(self) -> list[tuple[str, str, list[str], SourceOptions]]:
        """(kind, name, paths, how to read them) for every source and validation set."""
        out = [("train", n, s.paths, s.options()) for n, s in self.cfg.sources.items()]
        out += [("val", n, v.paths, v.options()) for n, v in self.cfg.validation.items()]
        return out

    def _check_relative(self, paths: list[str], name: str) -> None:
        if self.base_dir is None:
            for p in paths:
                if not Path(os.path.expanduser(p)).is_absolute():
                    raise CorpusError(
                        f"data entry {name!r} path {p!r} is relative and no base_dir was given: pass base_dir"
                    )

    def _ensure(self) -> None:
        for kind, name, paths, options in self._entries():
            key = f"{kind}:{name}"
            if key in self._folders:
                continue
            if options.format != "hub":
                self._check_relative(paths, name)
            folder, built = pack_source(
                f"{kind}-{name}",
                paths,
                options,
                self.tokenizer,
                self.cfg.seq_len,
                self.cache_dir,
                self.base_dir,
                progress=self.progress,
            )
            if built:
                self.built.append(key)
                meta = json.loads((folder / "meta.json").read_text())
                rank_zero_info(
                    f"[data] packed {key}: {meta['documents']} docs -> {meta['n_sequences']} x {meta['seq_len']} "
                    f"tokens in {meta['seconds']} s ({folder})"
                )
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
        self.stream = MixtureStream(
            [s.ratio for s in self.cfg.sources.values()], shares, self.cfg.new_token_bias, self.seed
        )
        rank_zero_info(self.describe())

    def describe(self) -> str:
        """One paragraph: sources, sizes, new-token share unbiased vs biased."""
        lines = [
            f"[data] seq_len={self.cfg.seq_len} vocab={self.vocab_size} (base {self.base_vocab_size}) "
            f"new_token_bias={self.cfg.new_token_bias} seed={self.seed}"
        ]
        for (n, p), r, sh in zip(self.train_sources.items(), self.stream.ratios, self._shares):
            lines.append(f"[data]   {n}: {p.n} sequences, ratio {r:.4f}, new-token share {sh.mean():.4f}")
        lines.append(
            f"[data] new-token share of training tokens: unbiased {self.new_token_share(False):.4f}, "
            f"biased {self.new_token_share(True):.4f}"
        )
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

    def text_bytes(self, start: int, stop: int) -> int:
        """UTF-8 bytes of text in the training sequences of global samples ``[start, stop)`` (``token_bytes``
        summed over their tokens): the text a stage trained on. Reads those sequences once more, a block at a time."""
        if self.stream is None:
            self.setup()
        tb = self.token_bytes.numpy()
        sources = list(self.train_sources.values())
        total = 0
        for a in range(int(start), int(stop), BLOCK):
            flat = self.stream.flat_indices(a, min(a + BLOCK, int(stop)))
            which = np.searchsorted(self.stream.offsets, flat, side="right") - 1
            for s, packed in enumerate(sources):
                rows = np.sort(flat[which == s] - self.stream.offsets[s])
                if len(rows):
                    total += int(tb[np.asarray(packed.tokens[rows], dtype=np.int64)].sum())
        return total

    def bytes_per_token(self, max_sequences: int = 4096) -> float:
        """Expected UTF-8 bytes of text per training token under the mixture's ratios (each source's mean over its
        first ``max_sequences`` packed sequences; special tokens count 0 bytes)."""
        if self.stream is None:
            self.setup()
        tb = self.tokenizer.token_bytes()
        per = [float(tb[np.asarray(p.tokens[: min(p.n, max_sequences)])].mean()) for p in self.train_sources.values()]
        return float(np.dot(self.stream.ratios, per))

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
        """Global samples consumed so far (by all ranks) — where a restart, or a new iterator, must continue."""
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
            rank_zero_info(
                f"[data] checkpoint seed {state.get('seed')} != {self.seed}: the stream continues with {self.seed}"
            )
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
            raise RuntimeError(
                "EEVEDataModule shards by rank itself: build the Trainer with use_distributed_sampler=False"
            )
        origin = self.sample_offset - self.sample_offset % world
        single = (t is not None and t.max_steps is not None and t.max_steps > 0) or (
            t is None and self._max_steps is not None and self._max_steps > 0
        )
        self._train_sampler = GlobalStreamSampler(
            self.stream,
            self._epoch_samples(),
            rank,
            world,
            origin=origin,
            start_fn=self._start_position,
            single_window=single,
        )
        folders = [self._folders[f"train:{n}"] for n in self.cfg.sources]
        return ResumableLoader(
            PackedDataset(folders),
            batch_size=self.cfg.micro_batch_size,
            sampler=self._train_sampler,
            drop_last=True,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            position_fn=self.consumed_samples,
        )

    def _start_position(self) -> int:
        """Global sample a new training iterator starts at: where training is now (with a trainer, its step)."""
        if self._trainer_or_none() is not None:
            return self.consumed_samples()
        return self._resume_consumed if self._resume_consumed is not None else self.sample_offset

    def val_rows(self, name: str) -> np.ndarray:
        """Rows of validation set ``name`` this rank evaluates."""
        rank, world, _ = self._dist()
        p = self.val_sets[name]
        n = min(p.n, int(self.cfg.validation[name].max_sequences))
        n -= n % world
        if n == 0:
            raise CorpusError(
                f"validation set {name!r} has {p.n} sequences, fewer than the {world} ranks: give more held-out text"
            )
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
