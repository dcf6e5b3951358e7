"""Crash-safe checkpoints for resuming a stage.

A checkpoint is written under a temporary name and renamed into place only when complete (a file for one
process, a torch.distributed.checkpoint folder per rank under FSDP), so a SIGKILL mid-write leaves at worst a
`.tmp-*` leftover, never a half-written `step-*.ckpt`. On resume the newest checkpoint that loads is used; a
truncated or corrupt one is reported and skipped in favour of the previous good one.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch

from eeve.io import commit, remove

PREFIX = "step-"


class AtomicCheckpoint(L.Callback):
    def __init__(self, dirpath: str | Path, every_n_steps: int, keep: int = 2):
        self.dirpath, self.every, self.keep = Path(dirpath), every_n_steps, max(1, keep)
        self._last_saved = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0 and step != self._last_saved:
            if step < trainer.max_steps:  # the end of a stage is kept as an export, not a checkpoint
                self.save(trainer, step)

    def on_exception(self, trainer, pl_module, exception):
        """A non-finite loss at step N came from the weights saved as step N's checkpoint: set that checkpoint
        aside (renamed out of the `step-*` pattern) so that a rerun resumes from the previous, good one."""
        if type(exception).__name__ == "NonFiniteLossError" and trainer.is_global_zero:
            bad = self.dirpath / f"{PREFIX}{trainer.global_step:08d}.ckpt"
            if bad.exists():
                os.replace(bad, self.dirpath / f"nonfinite-{bad.name}")

    def save(self, trainer: L.Trainer, step: int) -> Path:
        final = self.dirpath / f"{PREFIX}{step:08d}.ckpt"
        tmp = self.dirpath / f".tmp-{PREFIX}{step:08d}.ckpt"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            remove(tmp)
        trainer.strategy.barrier("eeve_ckpt_pre")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: weights, optimizer, scheduler, data position
        trainer.strategy.barrier("eeve_ckpt_written")
        if trainer.is_global_zero:
            commit(tmp, final)
            for old in list_checkpoints(self.dirpath)[self.keep :]:
                remove(old)
        trainer.strategy.barrier("eeve_ckpt_done")
        self._last_saved = step
        return final


def list_checkpoints(dirpath: str | Path) -> list[Path]:
    """Complete checkpoints, newest first."""
    d = Path(dirpath)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(".ckpt")), reverse=True)


def is_loadable(path: Path) -> tuple[bool, str]:
    """Whether a checkpoint reads back; the reason when not."""
    try:
        if path.is_dir():  # distributed checkpoint: its metadata names every shard
            from torch.distributed.checkpoint import FileSystemReader

            meta = FileSystemReader(str(path)).read_metadata()
            files = {info.relative_path for info in meta.storage_data.values()}
            missing = [f for f in files if not (path / f).is_file()]
            if missing:
                return False, f"shard file(s) missing: {missing[:3]}"
            return True, ""
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if "state_dict" not in ckpt or "global_step" not in ckpt:
            return False, "no state_dict/global_step in it"
        return True, ""
    except Exception as e:  # truncated zip, bad pickle, missing metadata, ...
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def find_resume_checkpoint(dirpath: str | Path, log=print) -> Path | None:
    for path in list_checkpoints(dirpath):
        ok, why = is_loadable(path)
        if ok:
            return path
        log(f"warning: checkpoint {path} is unreadable ({why}); skipping it for an older one")
    return None
