"""Delta exports: only the tensors and rows a stage changed, and rebuilding any stage bit for bit from the base
model and the chain of deltas before it.

``export.delta=true`` makes each stage write ``stage<N>/delta/delta.safetensors`` beside its full export (in a
sub-folder, so that loaders reading every ``*.safetensors`` of a model folder never take it for weights). It holds,
for every tensor of the export that differs from the stage's start (the previous stage's export; for the first
stage, the base model before expansion, so the new rows' initialisation is in the first delta):

- the smallest block of rows ``[offset, offset + n)`` holding every changed row (rows the start lacks count as
  changed). For the vocabulary matrices that is the stage's row groups: ``offset`` = the base vocabulary size
  when only new rows changed, 0 when old rows changed too; other changed tensors are usually stored whole;
- the whole tensor when it is new, or its shape changed in other ways than gaining rows.

The header's metadata (``eeve_delta``, JSON) records for each stored tensor its row offset and full shape, the
dtype and name of every tensor of the result, the base vocabulary size, the stage and where it started.
:func:`apply_deltas` casts the base to the recorded dtypes and writes the stored rows over it, delta after delta:
plain copies, so the result equals the full export bit for bit (tested).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch

from eeve.errors import ExportError
from eeve.model.load import load_base_model

log = logging.getLogger(__name__)

DELTA_DIR, DELTA_FILE = "delta", "delta.safetensors"
FORMAT = "eeve-delta/1"
_DTYPES = {
    str(t).removeprefix("torch."): t
    for t in (
        torch.float32,
        torch.bfloat16,
        torch.float16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.uint8,
        torch.bool,
    )
}


class SafetensorsWeights(Mapping[str, torch.Tensor]):
    """The tensors of an HF folder's ``model*.safetensors`` files, read one at a time on access (memory-mapped):
    comparing a stage with its start costs one tensor of memory, not a second model."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        files = sorted(self.folder.glob("model*.safetensors"))
        if not files:
            raise ExportError(
                f"{self.folder} holds no model*.safetensors: give an HF model folder saved with safetensors"
            )
        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), "pt") as h:
                self._where.update({k: f for k in h.keys()})

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._where[key]), "pt") as h:
            return h.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def base_weights(model_cfg) -> Mapping[str, torch.Tensor]:
    """The base model's weights before expansion, as the first stage's delta is computed against them: the
    folder's safetensors when ``model.name_or_path`` is a local folder, else the seeded random-init model."""
    path = Path(model_cfg.name_or_path).expanduser() if model_cfg.name_or_path else None
    if path is not None and path.is_dir() and any(path.glob("model*.safetensors")):
        return SafetensorsWeights(path)
    return load_base_model(model_cfg).state_dict()


# ---------------------------------------------------------------------------------------------------- writing
def compute_delta(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], info: dict | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors to store, metadata) for the change ``start`` -> ``end`` (see the module docstring)."""
    tensors, offsets, shapes = {}, {}, {}
    for k, new in end.items():
        old = start.get(k)
        stored = _changed_block(None if old is None else old.to(new.dtype), new)
        if stored is None:
            continue
        offset, block = stored
        tensors[k] = block.contiguous()
        offsets[k], shapes[k] = offset, list(new.shape)
    meta = {
        "format": FORMAT,
        "offsets": offsets,
        "shapes": shapes,
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in end.items()},
        **(info or {}),
    }
    return tensors, meta


def _changed_block(old: torch.Tensor | None, new: torch.Tensor) -> tuple[int, torch.Tensor] | None:
    """None if unchanged; else (row offset, rows to store)."""
    if old is not None and old.shape == new.shape and torch.equal(old, new):
        return None
    if old is None or new.dim() == 0 or old.shape[1:] != new.shape[1:] or old.shape[0] > new.shape[0]:
        return 0, new
    n_old = old.shape[0]
    differs = (old != new[:n_old]).reshape(n_old, -1).any(dim=1) if n_old else torch.zeros(0, dtype=torch.bool)
    rows = torch.nonzero(differs).flatten()
    first = int(rows[0]) if len(rows) else n_old
    last = new.shape[0] if new.shape[0] > n_old else int(rows[-1]) + 1
    return first, new[first:last]


def write_delta(
    path: str | Path, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], info: dict | None = None
) -> dict:
    """Write the delta ``start`` -> ``end`` to ``path`` (a safetensors file); returns its metadata, with
    ``bytes`` (tensor payload) added."""
    from safetensors.torch import save_file

    tensors, meta = compute_delta(start, end, info)
    save_file(tensors, str(path), metadata={"eeve_delta": json.dumps(meta)})
    meta["bytes"] = sum(t.numel() * t.element_size() for t in tensors.values())
    log.info("delta %s: %d tensors, %.1f MB", path, len(tensors), meta["bytes"] / 2**20)
    return meta


def delta_writer(start: Mapping[str, torch.Tensor], info: dict):
    """An ``export_hf`` extra that writes ``delta/delta.safetensors`` into the export folder."""

    def write(folder: Path, final_sd: Mapping[str, torch.Tensor]) -> None:
        (Path(folder) / DELTA_DIR).mkdir()
        write_delta(Path(folder) / DELTA_DIR / DELTA_FILE, start, final_sd, info)

    return write


# ---------------------------------------------------------------------------------------------------- reading
def read_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(stored tensors, metadata) of a delta file, or of the one in a stage export folder."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        p = p / DELTA_DIR / DELTA_FILE if (p / DELTA_DIR).is_dir() else p / DELTA_FILE
    if not p.is_file():
        raise ExportError(f"no delta at {p}: run the stage with export.delta=true")
    with safe_open(str(p), "pt") as h:
        meta = json.loads((h.metadata() or {}).get("eeve_delta", "null") or "null")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ExportError(f"{p} is not an eeve delta ({FORMAT})")
        return {k: h.get_tensor(k) for k in h.keys()}, meta


def apply_deltas(
    base: str | Path | Mapping[str, torch.Tensor], deltas: Iterable[str | Path]
) -> dict[str, torch.Tensor]:
    """The weights of the last stage in ``deltas`` (files or stage folders, in stage order), rebuilt from the
    base model (an HF folder or a state dict, as the first delta was computed against): bit-identical to that
    stage's full export."""
    state: Mapping[str, torch.Tensor] = SafetensorsWeights(base) if isinstance(base, (str, Path)) else base
    for d in deltas:
        tensors, meta = read_delta(d)
        out = {}
        for k, dtype in meta["dtypes"].items():
            old = state.get(k)
            if k not in tensors:
                if old is None:
                    raise ExportError(
                        f"{d}: {k} is neither in the delta nor in the weights it applies to: apply the "
                        "deltas in stage order, starting from the base model"
                    )
                out[k] = old.to(_DTYPES[dtype])
                continue
            shape, offset, block = meta["shapes"][k], meta["offsets"][k], tensors[k]
            if offset == 0 and list(block.shape) == shape:
                out[k] = block
                continue
            end = offset + block.shape[0]
            if (
                old is None
                or list(old.shape[1:]) != shape[1:]
                or old.shape[0] < offset
                or (old.shape[0] < shape[0] and end < shape[0])
            ):
                raise ExportError(
                    f"{d}: {k} of shape {None if old is None else list(old.shape)} cannot take rows "
                    f"{offset}..{end} of {shape}: wrong base or order of deltas"
                )
            full = torch.empty(shape, dtype=block.dtype)
            keep = min(old.shape[0], shape[0])
            full[:keep] = old[:keep].to(block.dtype)
            full[offset:end] = block
            out[k] = full
        state = out
    return dict(state)
