"""What produced a stage's export, so that a finished stage is reused only by the run that made it.

Each stage's ``metrics.json`` records a *fingerprint*: the base model, the expanded tokenizer's hash, the
initialisation, where the stage's weights started (the previous stage's own fingerprint, so retraining stage 1
invalidates stages 2..7), the stage's effective config and the data it read. Rerunning a finished stage skips it
only when the fingerprint matches; otherwise a one-line error names what differs and the two ways out (a new
``run_name``, or ``overwrite=true``). Hardware knobs (trainer.*, data.micro_batch_size, data.num_workers) are left
out: moving a run to other GPUs is not a different run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from eeve.config import TrainConfig
from eeve.errors import StageError

LABELS = {
    "base_model": "base model",
    "tokenizer_sha256": "tokenizer (tokenizer.path)",
    "init": "init",
    "starts_from": "starting weights (init_from, or the previous stage's export)",
    "stage": "stage config",
    "data": "data",
    "seed": "seed",
}
"""Fingerprint keys as the error message names them."""

HARDWARE_DATA_KEYS = ("micro_batch_size", "num_workers")


def digest(fingerprint: dict | None) -> str | None:
    """Short stable hash of a fingerprint (None stays None)."""
    if fingerprint is None:
        return None
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _plain(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x


def stage_fingerprint(cfg: TrainConfig, number: int, tokenizer_dir: Path, source: Path | None) -> dict:
    """The fingerprint of stage ``number`` as ``cfg`` would train it; ``source`` is the export it starts from
    (None: the expanded base model)."""
    model = cfg.model
    base = {"name_or_path": model.name_or_path, "dtype": model.dtype, "untie_embeddings": model.untie_embeddings}
    if not model.name_or_path:  # a random-init model is defined by its architecture
        base["config"] = dict(model.config)
    if source is None:
        starts = "expanded base"
    else:
        prev = source / "metrics.json"
        prev_fp = json.loads(prev.read_text()).get("fingerprint") if prev.is_file() else None
        starts = {"path": str(source), "fingerprint": digest(prev_fp)}
    data = {k: _plain(v) for k, v in dataclasses.asdict(cfg.data).items() if k not in HARDWARE_DATA_KEYS}
    return {
        "base_model": base,
        "tokenizer_sha256": _file_sha256(Path(tokenizer_dir) / "tokenizer.json"),
        "init": cfg.init,
        "starts_from": starts,
        "stage": dataclasses.asdict(cfg.stage),
        "data": data,
        "seed": cfg.seed,
    }


def _leaves(x: Any, prefix: str) -> dict[str, Any]:
    if isinstance(x, dict):
        out: dict[str, Any] = {}
        for k, v in x.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: x}


def differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences, one per fingerprint key that differs, e.g.
    ``stage config (stage.lr: 0.001 -> 0.002)``."""
    out = []
    for key, label in LABELS.items():
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key in ("stage", "data", "base_model"):
            prefix = {"stage": "stage", "data": "data", "base_model": "model"}[key]
            la, lb = _leaves(a or {}, prefix), _leaves(b or {}, prefix)
            keys = sorted(k for k in la.keys() | lb.keys() if la.get(k) != lb.get(k))
            shown = ", ".join(f"{k}: {_short(la.get(k))} -> {_short(lb.get(k))}" for k in keys[:3])
            out.append(f"{label} ({shown}{', ...' if len(keys) > 3 else ''})")
        elif key == "starts_from":
            out.append(label)
        else:
            out.append(f"{label} ({_short(a)} -> {_short(b)})")
    return out


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def finished_stage(out: Path, fingerprint: dict, overwrite: bool, number: int) -> dict | None:
    """The metrics of stage ``number`` if its export in ``out`` is finished and was produced by this fingerprint
    (the caller skips the stage); None if it must be trained (not finished, or ``overwrite``). A finished stage
    with another fingerprint raises a one-line :class:`StageError` naming what differs and the fix."""
    path = out / "metrics.json"
    if overwrite or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    old = metrics.get("fingerprint")
    fix = (
        f"give this run its own folder with hydra.run.dir=outputs/NAME (run_name also picks the tokenizer), or pass "
        f"overwrite=true to retrain stage {number} in {out.parent}"
    )
    if old is None:
        raise StageError(
            f"stage {number} at {out} records no fingerprint (written by an older version), so it cannot "
            f"be matched to this run: {fix}"
        )
    diff = differences(old, fingerprint)
    if diff:
        raise StageError(f"stage {number} at {out} was trained with a different {'; '.join(diff)}: {fix}")
    return metrics
