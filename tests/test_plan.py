"""`mode=plan`: the memory plan per device, checked against the measured peak of real training steps on CPU (tiny
and a mid-size debug Llama), and its arithmetic for SOLAR-10.7B on 8 GPUs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "1": "new_input",
    "2": "new_output",
    "6": "old_input,new_input,old_output,new_output,transformer",
    "6_lora": "old_input,new_input,old_output,new_output,transformer",
    "7": "transformer",
}


def _bench():
    """bench/plan_vs_measured.py: the measurement (a real training step in a fresh process) and the configs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plan_vs_measured", ROOT / "bench" / "plan_vs_measured.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compose(*overrides: str):
    return _bench().compose(*overrides)


@pytest.mark.slow
@pytest.mark.parametrize(
    "size,stage,ckpt",
    [  # one per kind of step; bench/plan_vs_measured.py measures every stage and the tiny model too
        ("mid", "1", False),  # input rows only
        ("mid", "2", False),  # output rows only: no backward through the backbone
        ("mid", "6", False),  # everything
        ("mid", "6_lora", True),  # adapters, with activation checkpointing
    ],
)
def test_plan_matches_measured_peak_on_cpu(size, stage, ckpt):
    """Within 20 % of the peak resident memory of real training steps (measured: within 3 %)."""
    from eeve.training.plan import plan_stage

    bench = _bench()
    cfg = bench.stage_config(size, stage, ckpt)
    assert cfg.stage.trainable == GROUPS[stage].split(",") and (cfg.stage.adapter == "lora") == stage.endswith("lora")
    plan = plan_stage(cfg)
    peak = bench.measured_peak(cfg, steps=2)  # the bench runs 3; the second already holds the peak
    assert abs(plan.peak / peak - 1) < 0.20, (plan.peak / 2**20, peak / 2**20, plan.phase)


def test_solar_fsdp8_plan_is_the_arithmetic():
    """SOLAR-10.7B, EEVE vocabulary 40960, FSDP over 8 GPUs, bf16, checkpointing (experiment=eeve_solar): the
    sharded columns are exactly parameters x bytes / 8 (+ two gathered decoder layers)."""
    from eeve.training.plan import plan_stage
    from eeve.training.stages import apply_schedule

    def solar(stage: int, devices: int):
        cfg = compose(
            "mode=plan",
            "experiment=eeve_solar",
            f"stage={stage}",
            f"trainer.devices={devices}",
            "plan.vocab_size=40960",
        )
        cfg.stage = apply_schedule(cfg.stage, str(stage), cfg.schedule, [])  # as train.py does
        return plan_stage(cfg)

    p6 = solar(6, 8)
    h, i, kv, n_layers, v = 4096, 14336, 1024, 48, 40960
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    total = n_layers * layer + 2 * v * h + h
    assert abs(total - 10.8e9) < 0.05e9
    assert p6.optimizer == 2 * total * 2 / 8  # two bf16 AdamW moments, sharded
    assert p6.params == total * 2 / 8 + 2 * layer * 2  # sharded bf16 weights + current and prefetched layer
    assert p6.tokens_per_step == 4096 * 8 and p6.steps == math.ceil(285_000_000 / (4096 * 8))
    p2 = solar(2, 8)
    assert p2.optimizer == 2 * (v - 32000) * h * 2 / 8  # only the new output rows train
    assert p2.peak < p6.peak / 2 and 12 * 2**30 < p6.peak < 16 * 2**30
    p6_4 = solar(6, 4)
    assert p6_4.optimizer == 2 * p6.optimizer and p6_4.activations == p6.activations
    assert p6_4.steps == math.ceil(285_000_000 / (4096 * 4))


@pytest.mark.slow
def test_cli_prints_the_table_and_fails_in_one_line_without_a_vocabulary(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "train.py", "mode=plan", f"hydra.run.dir={tmp_path}", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    r = run("stage=all", "experiment=eeve_solar", "trainer.devices=8", "plan.vocab_size=40960")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [x for x in r.stdout.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert [x.split("|")[1].strip() for x in rows] == [str(n) for n in range(1, 8)], r.stdout
    assert "world size 8" in r.stdout and "in GiB" in r.stdout and "arithmetic" in r.stdout
    assert not (tmp_path / "stage1").exists()  # nothing trained
    r = run("model=solar", "tokenizer.path=/nonexistent")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "plan.vocab_size=N" in r.stderr
