"""What a person reads: one plain line format, no progress-bar redraws where no terminal shows them, ETAs.

- ``plain_stderr()``: when stderr is not a terminal (a log file, SLURM output, a pipe), the writes that redraw a
  progress bar in place (they hold a carriage return: the tqdm bars of lm-evaluation-harness, transformers'
  "Loading weights" / "Writing model shards", datasets) are dropped from it, with the newline that closes a bar;
  everything else passes. The entry points (train.py, tokenize.py, python -m eeve.evaluate, the demo builders) call
  it first. Libraries that ask ``sys.stderr.isatty()`` then see no terminal either.
- ``PlainFormatter``: log records printed as the code's own lines are (``[data] ...``, ``stage 3 ...``): the message,
  with ``warning:`` / ``error:`` in front from WARNING up. conf/config.yaml gives it to Hydra's job logging.
- ``clock`` and ``eta_line``: elapsed time and ETA as ``H:MM:SS`` on a progress line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class BarFilter:
    """A text stream that passes everything to ``stream`` except progress-bar redraws (see the module docstring)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._after_bar = False

    def write(self, s: str) -> int:
        if "\r" in s:
            self._after_bar = True
            return len(s)
        if self._after_bar and not s.strip():  # the newline a bar ends with
            self._after_bar = False
            return len(s)
        self._after_bar = False
        return self.stream.write(s)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):  # flush, fileno, encoding, ...: the underlying stream's
        return getattr(self.stream, name)


def plain_stderr() -> None:
    """Install :class:`BarFilter` on ``sys.stderr`` unless it is a terminal (idempotent)."""
    if not isinstance(sys.stderr, BarFilter) and not sys.stderr.isatty():
        sys.stderr = BarFilter(sys.stderr)


class PlainFormatter(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` / ``error: message`` above (Hydra passes ``format``,
    ignored: the format is this class)."""

    def __init__(self, format: str | None = None, **kwargs):  # noqa: A002 - logging.config passes `format`
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def eta_line(what: str, step: int, total: int, elapsed: float, figures: str = "") -> str:
    """``<what> step 40/300 (13%) <figures> elapsed 0:00:52 eta 0:05:38`` (the rate so far sets the ETA)."""
    rate = step / elapsed if elapsed > 0 else 0.0
    eta = (total - step) / rate if rate > 0 else 0.0
    middle = f" {figures}" if figures else ""
    done = f"{100 * step / max(total, 1):.0f}%"
    return f"{what} step {step}/{total} ({done}){middle} elapsed {clock(elapsed)} eta {clock(eta)}"
