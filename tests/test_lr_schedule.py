"""One learning-rate schedule (eeve.lr_schedule), used by the stages and by the distill init."""

from __future__ import annotations

import math
import re
from pathlib import Path

from eeve.lr_schedule import warmup_cosine

SRC = Path(__file__).resolve().parents[1] / "src" / "eeve"


def test_warmup_then_cosine_to_the_floor():
    f = [warmup_cosine(s, 10, warmup_steps=2, min_ratio=0.1) for s in range(12)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0  # linear warm-up to the peak
    assert all(a >= b for a, b in zip(f[2:], f[3:]))  # then down, never up
    assert math.isclose(f[10], 0.1) and math.isclose(f[11], 0.1)  # the floor at the end and after it
    assert math.isclose(warmup_cosine(5, 10, min_ratio=0.0), 0.5)  # half-way down a cosine from 1 to 0


def test_the_cosine_is_written_once():
    """A second copy of the schedule drifts: only eeve/lr_schedule.py may compute a cosine of the step."""
    copies = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if re.search(r"cos\(math\.pi", p.read_text())]
    assert copies == ["lr_schedule.py"]
