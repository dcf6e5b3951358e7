"""Sampling: the deterministic, rank-sharded, new-token-biased mixture stream over packed sequences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from eeve.data.packing import Packed, open_packed

BLOCK = 4096
"""Global samples drawn per RNG block: block b uses ``np.random.default_rng([seed, b])``."""


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

    def __init__(
        self,
        stream: MixtureStream,
        epoch_samples: int,
        rank: int = 0,
        world_size: int = 1,
        origin: int = 0,
        start_fn=None,
        single_window: bool = False,
    ):
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
