"""Training-step speed and memory of the seven EEVE stages: this project vs the model cards' recipe, one run.

    .venv/bin/python bench/stage_speed.py [--tokenizer DIR] [--text FILE] [--batch 4] [--seq 256] [--hidden 512]
        [--layers 4] [--heads 8] [--kv-heads 4] [--intermediate 1536] [--warmup 2] [--steps 5] [--threads N]
        [--mem-steps 2] [--stat min|median|mean] [--gc] [--stages 1,2,...] [--adapter lora --lora-rank 16]
        [--device cpu|cuda] [--dtype fp32|bf16] [--json FILE]

Same model (a mid-size Llama, fp32, vocab 32000 expanded to the tokenizer's size with
`eeve.model.expand.expand_model`, weights saved once and loaded by every worker), same batches (real
Korean demo text encoded with the expanded tokenizer), same thread count, same AdamW (lr 1e-4, wd 0.1, no clipping
on either side). Per stage three subprocesses: one per variant alone for memory (peak RSS, optimizer state), and
one holding both variants that alternates their steps (project, recipe, recipe, project, ...) for the speed columns,
so that
load from other processes on a shared machine hits both sides alike.

* project: `split_vocab` + `set_trainable(model, <conf/stage/N.yaml trainable>)`, loss from
`eeve.training.module._eeve_losses`
  (backbone under no_grad when neither input rows nor the transformer train; the split head's fused
  fused chunked cross-entropy, logits never concatenated), AdamW over requires_grad parameters only.
* recipe (Axolotl + the model cards' hook): unsplit `LlamaForCausalLM(input_ids, labels=...)`; any input rows
  training -> the whole `embed_tokens.weight` requires grad, with a hook `grad[:base] = 0` unless old rows train
  too; any output rows -> the whole `lm_head.weight`, with the same hook when only new output rows train; the
  transformer when the stage trains it; AdamW over every requires_grad parameter.

`--adapter lora`: in the stages that train the transformer (6, 7), both sides train LoRA adapters (rank
`--lora-rank`, alpha 2 x rank, on every q/k/v/o/gate/up/down projection, eeve.training.adapters) instead of the
transformer's weights; the project keeps exact split-row training of the rows beside them, the recipe its
hooked whole matrices. The ideal optimizer state is then the trained rows plus the adapter.

`--device cuda --dtype bf16`: the same on a GPU with bf16 weights (adapters stay fp32, as in training); memory
columns are then peak CUDA memory allocated (torch.cuda.max_memory_allocated), and MFU is against the GPU's
dense bf16 peak from its data sheet (looked up by name; the measured matmul peak when the GPU is not listed).
`--json FILE` also writes the rows as JSON (bench/gpu_check.py reads it).

Columns: tokens/s from the `--stat` (default min) step time over `--steps` interleaved timed steps after `--warmup`
(forward + backward + optimizer step + zero_grad);
peak RSS of the memory worker over its `--mem-steps` steps (VmHWM reset after model construction through
/proc/self/clear_refs) and, in brackets, that peak minus the RSS after model construction (the training-only
increment); optimizer state = AdamW moment tensors' nbytes after one step ("step" scalars left out) vs the ideal
2 x 4 bytes x parameters of the trainable rows / tensors only; MFU = model matmul FLOPs per second of the project
step over the peak of a large fp32 torch.matmul measured here with the same threads. Model FLOPs count what each
variant computes: forward 2*P*tokens for every matmul parameter (layers + full head) + causal attention
(2*L*B*T^2*d), backward input-gradients (2*P*tokens + 2x attention) only where a gradient must flow through the
backbone (stages with input rows or the transformer training), and weight-gradients 2*P_w*tokens only for the
matmul weights that require grad (the head's trainable blocks for the project, the whole head for the recipe).
Softmax / norm / elementwise work is not counted, nor (with --gc) the recomputed forward. On a shared machine the
matmul peak is measured under the same load, so MFU is only as good as the load average printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# What each EEVE stage trains, read from the stage configs themselves (conf/stage/<N>.yaml).
STAGE_TRAINS = {
    n: tuple(yaml.safe_load((ROOT / "conf" / "stage" / f"{n}.yaml").read_text())["trainable"]) for n in range(1, 8)
}


# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s; matched against
# torch.cuda.get_device_name() in this order (first hit wins).
GPU_BF16_PEAK = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("A6000", 155e12),
]


def gpu_bf16_peak(name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, source) of a GPU by its torch.cuda.get_device_name(); (None, ...) if not listed."""
    for key, peak in GPU_BF16_PEAK:
        if key in name:
            return peak, "data sheet, dense"
    return None, "not listed in bench/stage_speed.py GPU_BF16_PEAK"


def _adapter_stage(meta: dict, stage: int):
    """The StageConfig of an adapter run of `stage` (None when there is no adapter or the stage keeps the transformer
    frozen)."""
    if not meta.get("adapter") or "transformer" not in STAGE_TRAINS[stage]:
        return None
    from eeve.config import LoraSettings, StageConfig

    rank = meta["lora_rank"]
    return StageConfig(
        number=stage,
        trainable=list(STAGE_TRAINS[stage]),
        adapter=meta["adapter"],
        lora=LoraSettings(rank=rank, alpha=2.0 * rank),
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (and ru_maxrss) to the current RSS
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------------ worker
def build(work: Path, stage: int, variant: str, gc: bool = False):
    """(model, optimizer, step function) of one variant, weights loaded from the prepared state dict."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from eeve.model.load import torch_dtype
    from eeve.model.split import split_vocab
    from eeve.training.groups import set_trainable
    from eeve.training.module import _eeve_losses

    meta = json.loads((work / "meta.json").read_text())
    base = meta["base_vocab_size"]
    groups = STAGE_TRAINS[stage]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**meta["config"]))
    sd = torch.load(work / "model.pt", weights_only=True)
    model.load_state_dict(sd)
    del sd
    model.to(device=meta["device"], dtype=torch_dtype(meta["dtype"]))
    model.config.use_cache = False
    model.train()
    backbone_grad = any(g in groups for g in ("old_input", "new_input", "transformer"))
    adapter = _adapter_stage(meta, stage)

    if variant == "project":
        split_vocab(model, base)
        if adapter is not None:  # the transformer group then means the adapter
            from eeve.training.adapters import attach_adapter

            attach_adapter(model, adapter, seed=0)
        set_trainable(model, groups)

        def loss_of(x, inp, lab):  # exactly what EEVEModule.losses does
            return _eeve_losses(model, x[:, :-1], x[:, 1:], backbone_grad)[0]
    else:
        if adapter is not None:
            from eeve.training.adapters import attach_adapter

            attach_adapter(model, adapter, seed=0)
        for p in model.parameters():
            p.requires_grad_(False)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight

        def zero_old_rows(grad):  # the model card's hook
            grad[:base] = 0
            return grad

        if "new_input" in groups or "old_input" in groups:
            emb.requires_grad_(True)
            if "old_input" not in groups:
                emb.register_hook(zero_old_rows)
        if "new_output" in groups or "old_output" in groups:
            head.requires_grad_(True)
            if "old_output" not in groups:  # Axolotl row-range freezing of lm_head
                head.register_hook(zero_old_rows)
        if "transformer" in groups:  # its weights, or with an adapter the adapter's
            for n, p in model.named_parameters():
                if (".lora_" in n) if adapter is not None else not n.startswith(("model.embed_tokens.", "lm_head.")):
                    p.requires_grad_(True)

        def loss_of(x, inp, lab):  # the collator's contiguous input_ids / labels, prepared outside the clock
            return model(input_ids=inp, labels=lab, shift_labels=lab, use_cache=False).loss

    if gc:  # both sides as configured for a 10.7B model; HF then also forces the embedding output to need grad
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)

    def step(batch):
        loss = loss_of(*batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return model, opt, step, sum(p.numel() for p in params)


def _batches(work: Path):
    import torch

    data = torch.load(work / "batches.pt", weights_only=True)  # [n_batches, B, T+1]
    data = data.to(json.loads((work / "meta.json").read_text())["device"])
    return [(x, x[:, :-1].contiguous(), x[:, 1:].contiguous()) for x in data.unbind(0)], int(
        data.shape[1] * (data.shape[2] - 1)
    )


def worker_memory(a) -> dict:
    """One variant alone: RSS after construction, peak RSS over --mem-steps steps, AdamW state bytes, step times."""
    import gc
    import resource

    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    batches, tps = _batches(work)
    model, opt, step, n_train = build(work, a.stage, a.variant, a.gc)
    gc.collect()
    cuda = json.loads((work / "meta.json").read_text())["device"].startswith("cuda")
    if cuda:  # GPU memory instead of host RSS
        torch.cuda.synchronize()
        rss_built = torch.cuda.memory_allocated() / 1024
        torch.cuda.reset_peak_memory_stats()
        reset = True
    else:
        rss_built = _status_kb("VmRSS")
        reset = _reset_peak()
    times, losses, opt_bytes = [], [], None
    for i in range(a.mem_steps):
        t0 = time.perf_counter()
        losses.append(step(batches[i % len(batches)]))
        times.append(time.perf_counter() - t0)
        if opt_bytes is None:
            opt_bytes = sum(
                v.nbytes for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v) and k != "step"
            )
    if cuda:
        peak_kb = torch.cuda.max_memory_allocated() / 1024
    else:
        peak_kb = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rss_built_mb": rss_built / 1024,
        "peak_mb": peak_kb / 1024,
        "peak_reset": reset,
        "times": times,
        "opt_bytes": opt_bytes,
        "trainable_numel": n_train,
        "loss": losses,
        "tokens_per_step": tps,
    }


def worker_timing(a) -> dict:
    """Both variants in one process, steps interleaved (project, recipe, recipe, project, ...) on the same batches,
    so that
    load from other processes hits both alike; --warmup untimed then --steps timed steps each."""
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    batches, tps = _batches(work)
    steps = {v: build(work, a.stage, v, a.gc)[2] for v in ("project", "recipe")}
    times = {v: [] for v in steps}
    for i in range(a.warmup + a.steps):
        for v in ("project", "recipe") if i % 2 == 0 else ("recipe", "project"):  # alternate who goes first
            step = steps[v]
            t0 = time.perf_counter()
            step(batches[i % len(batches)])
            if i >= a.warmup:
                times[v].append(time.perf_counter() - t0)
    return {"times": times, "tokens_per_step": tps}


# ------------------------------------------------------------------------------------------------------ parent
def prepare(a, work: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from eeve.model.expand import expand_model, read_expansion

    torch.set_num_threads(a.threads)
    exp = read_expansion(a.tokenizer)
    base, V = int(exp["base_vocab_size"]), int(exp["vocab_size"])
    conf = dict(
        vocab_size=base,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**conf))
    expand_model(model, Path(a.tokenizer) / "base_tokenizer", exp["new_tokens"], base)
    assert model.get_input_embeddings().weight.shape[0] == V
    torch.save(model.state_dict(), work / "model.pt")
    conf["vocab_size"] = V

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    need = a.batch * (a.seq + 1) * min(a.warmup + a.steps, 8)
    ids: list[int] = []
    with open(a.text, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                ids += tok(line, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
            if len(ids) >= need:
                break
    if len(ids) < a.batch * (a.seq + 1):
        sys.exit(f"{a.text}: only {len(ids)} tokens, need at least {a.batch * (a.seq + 1)}")
    n_b = len(ids) // (a.batch * (a.seq + 1))
    data = torch.tensor(ids[: n_b * a.batch * (a.seq + 1)]).view(n_b, a.batch, a.seq + 1)
    torch.save(data, work / "batches.pt")

    P_layers = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and ".layers." in n)
    P_transformer = sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith(("model.embed_tokens.", "lm_head."))
    )
    meta = {
        "config": conf,
        "base_vocab_size": base,
        "vocab_size": V,
        "P_layers": P_layers,
        "P_transformer": P_transformer,
        "new_target_share": float((data[:, :, 1:] >= base).float().mean()),
        "device": a.device,
        "dtype": a.dtype,
        "adapter": a.adapter,
        "lora_rank": a.lora_rank,
        "P_adapter": 0,
    }
    if a.adapter:  # adapter size, counted on an empty (meta-device) copy
        from eeve.training.adapters import attach_adapter

        with torch.device("meta"):
            skeleton = LlamaForCausalLM(LlamaConfig(**conf))
        attach_adapter(skeleton, _adapter_stage(meta, 7), seed=0)
        meta["P_adapter"] = sum(p.numel() for n, p in skeleton.named_parameters() if ".lora_" in n)
    (work / "meta.json").write_text(json.dumps(meta))
    return meta


def matmul_peak(threads: int, n: int = 2048, seconds: float = 3.0, device: str = "cpu", dtype: str = "fp32") -> float:
    import torch

    from eeve.model.load import torch_dtype

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        n = max(n, 8192)  # a GPU needs a large product to reach its peak
    kw = dict(device=device, dtype=torch_dtype(dtype))
    x, y = torch.randn(n, n, **kw), torch.randn(n, n, **kw)
    for _ in range(2):
        torch.matmul(x, y)
    _sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.matmul(x, y)
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def device_peak(a) -> tuple[float, str]:
    """(peak FLOP/s that MFU divides by, where it comes from)."""
    measured = matmul_peak(a.threads, device=a.device, dtype=a.dtype)
    if a.device.startswith("cuda") and a.dtype == "bf16":
        import torch

        name = torch.cuda.get_device_name()
        peak, _ = gpu_bf16_peak(name)
        if peak is not None:
            return peak, (
                f"{name} dense bf16 peak {peak / 1e12:.0f} TFLOP/s (data sheet; measured bf16 matmul "
                f"{measured / 1e12:.0f})"
            )
        return measured, f"{name} (not listed): measured bf16 matmul peak {measured / 1e12:.0f} TFLOP/s"
    return measured, f"{a.dtype} matmul peak {measured / 1e9:.1f} GFLOP/s (measured, best of 3 s)"


def step_flops(meta: dict, a, stage: int, variant: str) -> float:
    """Model matmul FLOPs of one training step as the variant computes it (see module docstring)."""
    g = STAGE_TRAINS[stage]
    d, L, V, base = a.hidden, a.layers, meta["vocab_size"], meta["base_vocab_size"]
    N = a.batch * a.seq
    attn = 2.0 * L * a.batch * a.seq**2 * d  # causal QK^T + AV
    P_head = V * d
    fwd = 2.0 * (meta["P_layers"] + P_head) * N + attn
    backbone_grad = any(x in g for x in ("old_input", "new_input", "transformer"))
    bwd_in = 2.0 * (meta["P_layers"] + P_head) * N + 2 * attn if backbone_grad else 0.0
    if variant == "project":
        head_rows = ("old_output" in g) * base + ("new_output" in g) * (V - base)
    else:
        head_rows = V if ("old_output" in g or "new_output" in g) else 0
    if _adapter_stage(meta, stage) is not None:  # forward, input and weight gradients of the adapters only
        transformer_w = 6.0 * meta["P_adapter"] * N
    else:
        transformer_w = 2.0 * meta["P_layers"] * N if "transformer" in g else 0.0
    bwd_w = 2.0 * head_rows * d * N + transformer_w
    return fwd + bwd_in + bwd_w


def ideal_opt_bytes(meta: dict, a, stage: int) -> int:
    """AdamW's two moments for exactly the trainable rows / tensors (an adapter's in fp32, the rest in the model
    dtype)."""
    d, V, base = a.hidden, meta["vocab_size"], meta["base_vocab_size"]
    size = 2 if a.dtype == "bf16" else 4
    rows = {
        "old_input": base * d,
        "new_input": (V - base) * d,
        "old_output": base * d,
        "new_output": (V - base) * d,
        "transformer": meta["P_transformer"],
    }
    if _adapter_stage(meta, stage) is not None:
        return 2 * (size * sum(rows[x] for x in STAGE_TRAINS[stage] if x != "transformer") + 4 * meta["P_adapter"])
    return 2 * size * sum(rows[x] for x in STAGE_TRAINS[stage])


def run_worker(a, work: Path, stage: int, mode: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        mode,
        "--_workdir",
        str(work),
        "--_stage",
        str(stage),
        "--threads",
        str(a.threads),
        "--warmup",
        str(a.warmup),
        "--steps",
        str(a.steps),
        "--mem-steps",
        str(a.mem_steps),
    ] + (["--gc"] if a.gc else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"worker stage {stage} {mode} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=str(ROOT / "outputs/tokenize/demo/tokenizer"))
    ap.add_argument("--text", default=str(ROOT / ".cache/demo/ko/train.txt"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--stages", default="1,2,3,4,5,6,7")
    ap.add_argument(
        "--stat",
        choices=("min", "median", "mean"),
        default="min",
        help="step time statistic over the timed steps (min: least disturbed by other load)",
    )
    ap.add_argument(
        "--mem-steps",
        type=int,
        default=2,
        help="steps of each single-variant memory worker (the peak is reached by the second)",
    )
    ap.add_argument(
        "--gc",
        action="store_true",
        help="activation checkpointing on both sides (model.gradient_checkpointing_enable, as Axolotl's "
        "gradient_checkpointing: true and the project's model.activation_checkpointing do)",
    )
    ap.add_argument(
        "--adapter",
        choices=("lora",),
        default=None,
        help="LoRA adapters instead of the transformer's weights in the stages that train it (6, 7)",
    )
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU)")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights' dtype")
    ap.add_argument("--json", default=None, help="also write the table's rows to this JSON file")
    ap.add_argument("--_worker", choices=("project", "recipe", "timing"), help=argparse.SUPPRESS)
    ap.add_argument("--_workdir", help=argparse.SUPPRESS)
    ap.add_argument("--_stage", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        a.workdir, a.stage, a.variant = a._workdir, a._stage, a._worker
        print(json.dumps(worker_timing(a) if a._worker == "timing" else worker_memory(a)))
        return

    stages = [int(s) for s in a.stages.split(",") if s.strip()]
    rel = lambda p: os.path.relpath(p, ROOT) if str(p).startswith(str(ROOT)) else str(p)  # noqa: E731
    print("command: " + " ".join(shlex.quote(x) for x in [".venv/bin/python", rel(__file__)] + sys.argv[1:]))
    t_start = time.perf_counter()
    import statistics

    stat = {"min": min, "median": statistics.median, "mean": statistics.fmean}[a.stat]
    load0 = _loadavg()
    with tempfile.TemporaryDirectory(prefix="eeve_stage_speed_") as tmp:
        work = Path(tmp)
        meta = prepare(a, work)
        peak, peak_from = device_peak(a)
        import torch

        print(
            f"torch {torch.__version__}, {a.threads} threads, device {a.device}; model: Llama hidden {a.hidden}, "
            f"{a.layers} layers, {a.heads} heads / {a.kv_heads} KV, intermediate {a.intermediate}, vocab "
            f"{meta['base_vocab_size']} -> {meta['vocab_size']} (untied, {a.dtype}); batch {a.batch} x seq {a.seq} "
            f"of Korean demo text ({100 * meta['new_target_share']:.1f}% of targets are new tokens); warm-up "
            f"{a.warmup}, timed {a.steps} steps; activation checkpointing {'on' if a.gc else 'off'}; "
            + (f"LoRA rank {a.lora_rank} ({meta['P_adapter']:,} parameters) in stages 6-7; " if a.adapter else "")
            + f"MFU against: {peak_from}",
            flush=True,
        )
        rows = []
        for s in stages:
            res = {v: run_worker(a, work, s, v) for v in ("project", "recipe", "timing")}
            rows.append((s, res))
            tt = res["timing"]["times"]
            print(
                f"  stage {s} step times (s), interleaved: project {' '.join(f'{t:.2f}' for t in tt['project'])}; "
                f"recipe {' '.join(f'{t:.2f}' for t in tt['recipe'])}  [load {_loadavg()}]",
                flush=True,
            )
    MB = 2**20
    print(f"load average at start {load0}, at end {_loadavg()} (other processes compete for the cores when high)")
    print()
    mem = "GPU peak MB" if a.device.startswith("cuda") else "peak MB"
    print(
        f"| stage | trains | project tok/s | recipe tok/s | speedup | project {mem} (+train) | "
        f"recipe {mem} (+train) | project optimizer MB | recipe optimizer MB | ideal optimizer MB | project MFU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes, records = [], []
    for s, res in rows:
        pr, rc = res["project"], res["recipe"]
        step = {v: stat(t) for v, t in res["timing"]["times"].items()}
        tps = {v: res["timing"]["tokens_per_step"] / step[v] for v in step}
        step_s = step["project"]
        mfu = step_flops(meta, a, s, "project") / step_s / peak
        ideal = ideal_opt_bytes(meta, a, s)
        ok = "=" if pr["opt_bytes"] == ideal else "≠"
        trains = "+".join(STAGE_TRAINS[s]) if s != 6 else "everything"
        if _adapter_stage(meta, s) is not None:
            trains = trains.replace("transformer", "LoRA").replace("everything", "rows+LoRA")
        records.append(
            {
                "stage": s,
                "trains": trains,
                "project_tok_s": tps["project"],
                "recipe_tok_s": tps["recipe"],
                "project_peak_mb": pr["peak_mb"],
                "recipe_peak_mb": rc["peak_mb"],
                "project_optimizer_bytes": pr["opt_bytes"],
                "recipe_optimizer_bytes": rc["opt_bytes"],
                "ideal_optimizer_bytes": ideal,
                "mfu": mfu,
                "peak_flops": peak,
                "peak_from": peak_from,
            }
        )
        print(
            f"| {s} | {trains} | {tps['project']:,.0f} | "
            f"{tps['recipe']:,.0f} | {tps['project'] / tps['recipe']:.2f}x | "
            f"{pr['peak_mb']:,.0f} (+{pr['peak_mb'] - pr['rss_built_mb']:,.0f}) | "
            f"{rc['peak_mb']:,.0f} (+{rc['peak_mb'] - rc['rss_built_mb']:,.0f}) | "
            f"{pr['opt_bytes'] / MB:,.2f} {ok} | {rc['opt_bytes'] / MB:,.2f} | {ideal / MB:,.2f} | "
            f"{100 * mfu:.1f}% |"
        )
        if abs(pr["loss"][0] - rc["loss"][0]) > 1e-3 * max(1.0, abs(rc["loss"][0])):
            notes.append(
                f"stage {s}: first-step loss differs: project {pr['loss'][0]:.5f} vs recipe {rc['loss'][0]:.5f}"
            )
        if not (pr["peak_reset"] and rc["peak_reset"]):
            notes.append(f"stage {s}: peak RSS could not be reset after construction; peak includes it")
    print()
    print(
        "peak MB = peak RSS of the single-variant worker over its steps; (+train) = that minus the RSS after model "
        "construction. optimizer MB = AdamW exp_avg + exp_avg_sq nbytes after one step; '=' marks the "
        "project equal to the ideal (trainable rows and adapter only). MFU = model matmul FLOPs / step time / "
        "peak above. "
        f"tok/s from the {a.stat} step time."
    )
    for n in notes:
        print("note: " + n)
    print(f"total wall time {time.perf_counter() - t_start:.0f}s")
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
