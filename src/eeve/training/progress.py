"""What a stage shows while it runs: a live bar on a terminal, plain periodic lines in a log, and no banners.

- On a terminal (stderr is a tty): one tqdm bar per stage with step/total, loss, tokens/s, elapsed and ETA.
- When stdout is not a terminal (a log file, SLURM output, a pipe): one plain line every
  ``trainer.log_every_n_steps`` optimizer steps, and at the last step, with the same figures.
- tokens/s counts training time only: validations inside the stage (and the same-bytes evaluations and the guard
  that run with them) are left out of its window; the ETA uses the whole elapsed time, since they recur.
- Lightning's repeated banners ("GPU available", "TPU available", the tips advertising other products, the
  LOCAL_RANK and distributed-startup lines, "`Trainer.fit` stopped") are dropped; the stage header printed by
  eeve.training.stages (trainable groups, tokens per step, world size) stays the one header per stage.
Everything is printed by global rank 0 only.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from eeve.console import clock

NOISE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "IPU available:",
    "\U0001f4a1 Tip:",
    "LOCAL_RANK:",
    "`Trainer.fit` stopped",
    "Initializing distributed:",
    "-" * 20,
    "distributed_backend=",
    "You are using a CUDA device",
)
"""Starts of Lightning log messages that carry nothing a stage's reader needs, each printed once per Trainer."""

NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.accelerators.cuda",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith(NOISE)


def quiet_lightning() -> None:
    """Drop Lightning's banners and tips (idempotent), and progress bars of libraries saving files when no one
    watches them (transformers' "Writing model shards" would otherwise land in logs as carriage-return noise)."""
    for name in NOISY_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in log.filters):
            log.addFilter(_DropNoise())
    # Lightning's pytree shim trips a torch deprecation on every fit; it is not the user's to fix
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class StageProgress(Callback):
    """Progress of one stage in optimizer steps (see the module docstring). ``bar`` / ``lines``: None = decide
    from the terminal (bar when stderr is a tty; lines when stdout is not). Reads ``tokens_per_step`` from the
    LightningModule (0 if absent)."""

    def __init__(
        self,
        stage: int,
        every: int,
        bar: bool | None = None,
        lines: bool | None = None,
        bar_file: TextIO | None = None,
        line_file: TextIO | None = None,
    ):
        self.stage, self.every = stage, max(1, int(every))
        self.bar_on = sys.stderr.isatty() if bar is None else bar
        self.lines_on = (not sys.stdout.isatty()) if lines is None else lines
        self.bar_file, self.line_file = bar_file, line_file
        self.bar = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_n = 0
        self.last_loss: float | None = None
        self.active, self.t_val, self.paused = False, None, 0.0

    # ---- timing
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = trainer.is_global_zero and (self.bar_on or self.lines_on)
        self.total = int(trainer.max_steps)
        self.tokens_per_step = int(getattr(pl_module, "tokens_per_step", 0) or 0)
        self.first = self.last = int(trainer.global_step)  # a resumed stage starts part-way
        self.t0 = self.t_line = time.perf_counter()
        self.step_line = self.first
        self.paused = self.paused_line = 0.0  # seconds spent validating since on_train_start / the last line
        self.t_val = None
        if self.active and self.bar_on:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.first,
                desc=f"stage {self.stage}",
                unit="step",
                dynamic_ncols=True,
                file=self.bar_file or sys.stderr,
                leave=True,
            )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self.active:
            self.t_val = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if self.t_val is not None:  # training resumes: the validation is over
            self.paused += time.perf_counter() - self.t_val
            self.t_val = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self.active:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # summed on the device; read back only when shown (no sync per step)
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_n += 1
        step = int(trainer.global_step)
        if step == self.last:  # still accumulating gradients for this optimizer step
            return
        done, self.last = step - self.last, step
        show_bar = self.bar is not None
        show_line = self.lines_on and (step % self.every == 0 or step >= self.total)
        if not (show_bar or show_line):
            return
        if self._loss_sum is not None:
            self.last_loss = float(self._loss_sum) / max(self._loss_n, 1)
        self._loss_sum, self._loss_n = None, 0
        now = time.perf_counter()
        elapsed = now - self.t0
        rate = (step - self.first) / elapsed if elapsed > 0 else 0.0  # steps/s over this run, validations included
        eta = (self.total - step) / rate if rate > 0 else 0.0
        if show_bar:
            post = {"loss": f"{self.last_loss:.4f}" if self.last_loss is not None else "-"}
            if self.tokens_per_step:
                busy = elapsed - self.paused
                post["tok/s"] = f"{(step - self.first) * self.tokens_per_step / busy if busy > 0 else 0:,.0f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(done)
        if show_line:
            window = now - self.t_line - (self.paused - self.paused_line)  # training time only
            tok_s = (step - self.step_line) * self.tokens_per_step / window if window > 0 else 0.0
            self.t_line, self.step_line, self.paused_line = now, step, self.paused
            loss = f"{self.last_loss:.4f}" if self.last_loss is not None else "-"
            print(
                f"stage {self.stage} step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) "
                f"loss {loss} tok/s {tok_s:,.0f} elapsed {clock(elapsed)} eta {clock(eta)}",
                file=self.line_file or sys.stdout,
                flush=True,
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
