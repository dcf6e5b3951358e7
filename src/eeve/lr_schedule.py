"""The learning-rate schedule of every optimizer in the package: linear warm-up, then a cosine down to a floor.

Used by the stages' AdamW (eeve.training.module: ``stage.warmup_steps``, ``stage.min_lr_ratio``) and by the
``distill`` init's backbone phase (eeve.model.teacher: no warm-up, down to 10 %). Pure arithmetic: no torch."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.1) -> float:
    """The factor on the peak rate at optimizer step ``step`` (0-based): ``(step + 1) / warmup_steps`` during the
    warm-up, then half a cosine from 1 down to ``min_ratio`` at ``total_steps``, and ``min_ratio`` after it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
