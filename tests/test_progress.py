"""What a stage shows: a live bar on a terminal, periodic plain lines in a log, no Lightning banners."""

from __future__ import annotations

import io
import logging
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from eeve.training.progress import StageProgress, quiet_lightning

ROOT = Path(__file__).resolve().parents[1]
BANNERS = ("GPU available", "TPU available", "Tip:", "LOCAL_RANK", "`Trainer.fit` stopped", "LeafSpec")


class Regression(L.LightningModule):
    """The smallest real LightningModule: a linear fit, reporting its loss like EEVEModule does."""

    tokens_per_step = 512

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def test_bar_and_lines_follow_optimizer_steps(tmp_path):
    bar, lines = io.StringIO(), io.StringIO()
    cb = StageProgress(5, every=2, bar=True, lines=True, bar_file=bar, line_file=lines)
    trainer = L.Trainer(
        max_steps=5,
        accumulate_grad_batches=2,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(Regression())
    got = lines.getvalue().splitlines()
    # every 2nd optimizer step (not micro-batch) and the last one; loss, tokens/s and ETA on each line
    assert [re.match(r"stage 5 step (\d+)/5 ", x).group(1) for x in got] == ["2", "4", "5"], got
    for x in got:
        assert re.search(r"loss \d+\.\d{4} tok/s [\d,]+ elapsed \d+:\d\d:\d\d eta \d+:\d\d:\d\d$", x), x
    assert float(got[-1].split("loss ")[1].split()[0]) < float(got[0].split("loss ")[1].split()[0])  # it learns
    assert "stage 5: 100%" in bar.getvalue() and "5/5" in bar.getvalue() and "tok/s=" in bar.getvalue()


def test_quiet_lightning_drops_banners_only(caplog):
    from lightning.pytorch.utilities import rank_zero_info

    quiet_lightning()
    with caplog.at_level(logging.INFO):
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
        rank_zero_info("[data] this line stays")
    assert "[data] this line stays" in caplog.text
    assert not any(b in caplog.text for b in BANNERS), caplog.text


@pytest.mark.slow
def test_terminal_shows_a_bar_and_logs_show_lines(expanded_tokenizer, tmp_path):
    """`python train.py` with stderr on a terminal (a pseudo-terminal here) and stdout to a pipe, as in
    `python train.py ... > run.log`: the bar reaches the terminal, the periodic lines the log, no banners."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    args = [
        "stage=1",
        "stage.max_steps=4",
        "stage.warmup_steps=1",
        "data.seq_len=64",
        "data.micro_batch_size=4",
        "data.validation.ko.max_sequences=4",
        "data.validation.en.max_sequences=4",
        "trainer.log_every_n_steps=2",
        "trainer.val_every_n_steps=100",
        "trainer.checkpoint_every_n_steps=100",
        "eval.enabled=false",
        f"hydra.run.dir={tmp_path}",
        f"tokenizer.path={expanded_tokenizer}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    term = b""
    while True:  # drain the terminal while the run goes on (a full pty buffer would block the child)
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            term += chunk
        elif proc.poll() is not None:
            break
    log = proc.stdout.read().decode()
    proc.wait(timeout=60)
    os.close(master)
    term_text = term.decode(errors="replace")
    assert proc.returncode == 0, term_text[-3000:] + log[-3000:]
    assert re.search(r"stage 1: 100%\|.*\| 4/4 .*loss=\d+\.\d+, tok/s=", term_text), term_text[-2000:]
    steps = re.findall(r"^stage 1 step (\d+)/4 \(\d+%\) loss [\d.]+ tok/s [\d,]+ elapsed .* eta .*$", log, re.M)
    assert steps == ["2", "4"], log
    assert "stage 1: trains ['new_input']; 4 steps x 256 tokens/step" in log and "world size 1" in log
    assert not any(b in log + term_text for b in BANNERS), log + term_text


class SlowValidation(Regression):
    """Validation that takes 1.5 s (a same-bytes evaluation, the guard) after optimizer step 2."""

    def validation_step(self, batch, batch_idx):
        import time

        time.sleep(1.5)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(1, 4)), batch_size=1)


def test_tokens_per_second_counts_training_time_only(tmp_path):
    """The window of the line after a validation holds the validation's time unless it is left out (issue: tok/s
    swung from 90 to 2,050)."""
    lines = io.StringIO()
    cb = StageProgress(1, every=2, bar=False, lines=True, line_file=lines)
    trainer = L.Trainer(
        max_steps=4,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(SlowValidation())
    got = lines.getvalue().splitlines()
    assert len(got) == 2 and cb.paused >= 1.5, (got, cb.paused)
    seconds = 2 * Regression.tokens_per_step / float(got[1].split("tok/s ")[1].split()[0].replace(",", ""))
    assert seconds < 1.0, got  # two linear-regression steps, not the 1.5 s validation between them
    eta_total = got[1].split("elapsed ")[1]
    assert eta_total.startswith(("0:00:01", "0:00:02", "0:00:03")), got  # the elapsed time keeps the validation
