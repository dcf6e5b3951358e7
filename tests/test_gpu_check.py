"""bench/gpu_check.py: its bf16-vs-fp32 comparison can fail, and the script runs on a CPU-only machine with the
CUDA parts skipped (the bf16 side on the CPU, so that every comparison runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def metrics(ko0, ko1, en0=3.0, en1=3.0):
    return {
        "val_start": {"ko": {"loss": ko0}, "en": {"loss": en0}},
        "val_end": {"ko": {"loss": ko1}, "en": {"loss": en1}},
    }


def test_compare_tolerances():
    from gpu_check import compare

    ref = metrics(10.0, 9.0)
    assert compare(ref, metrics(10.05, 9.03), 0.02, 0.1)[0]  # within 2 %, drop 0.98 vs 1.0
    assert not compare(ref, metrics(10.0, 9.5), 0.2, 0.1)[0]  # loss within 20 % but the drop halves
    assert not compare(ref, metrics(10.5, 9.5), 0.02, 0.1)[0]  # 5 % off at the start
    assert compare(metrics(10.0, 9.995), metrics(10.0, 10.0), 0.02, 0.1)[0]  # a tiny drop: the 0.01-nat floor


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_cuda_parts_skipped(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "bench/gpu_check.py",
            "--model",
            "tiny",
            "--steps",
            "2",
            "--seq",
            "32",
            "--batch",
            "4",
            "--cpu-bf16",
            "--runs",
            "1",  # stages 6 and 6 LoRA on two ranks: test_train.py, test_adapters.py
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "CUDA not available" in out and "| check | result | status |" in out
    assert "| CUDA-marked tests | skipped: no CUDA | SKIP |" in out
    assert "| stage_speed on the GPU | skipped: no CUDA | SKIP |" in out
    assert "| stage 1, fsdp fp32 CPU |" in out and "| stage 1, fsdp bf16 CPU vs fp32 CPU |" in out
    assert "| stage 6, " not in out  # --runs 1
    assert "0 failed, 1 passed, 2 skipped" in out


def test_runs_without_stage_1_is_refused():
    from gpu_check import main

    with pytest.raises(SystemExit) as e:
        main(["--runs", "6"])
    assert e.value.code == 2
