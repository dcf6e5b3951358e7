#!/usr/bin/env bash
# The GPU check in one command (see bench/gpu_check.py): CUDA-marked tests, stages 1 and 6 with FSDP2 in bf16 on
# one GPU against fp32 on the CPU, stage_speed on the GPU; one table; exit status 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" bench/gpu_check.py "$@"
