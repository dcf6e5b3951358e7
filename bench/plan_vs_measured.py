"""`mode=plan`'s peak memory against the measured peak of real training steps on this CPU.

    .venv/bin/python bench/plan_vs_measured.py [--sizes tiny,mid] [--stages 1,2,4,6,7]

For each debug model size and stage (without and with activation checkpointing), the plan of
`python train.py mode=plan model=tiny stage=N trainer.accelerator=cpu ...` is compared with three real training
steps of the split model (the fused head loss, frozen groups without gradients, a fresh AdamW over the trainable
tensors, as EEVEModule runs them) in a fresh process: peak resident memory (the kernel's high-water mark, reset
just before the model is built) minus the resident memory before it. Large allocations go through mmap
(MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the resident set, as they leave a GPU's allocated memory.
tests/test_plan.py uses `measured_peak` from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VOCAB = 35264  # the demo tokenizer's expanded vocabulary
SIZES = {
    "tiny": ["data.micro_batch_size=8", "data.seq_len=128"],  # conf/model/tiny.yaml
    "mid": [
        "model.config.hidden_size=512",
        "model.config.intermediate_size=1536",
        "model.config.num_hidden_layers=4",
        "model.config.num_attention_heads=8",
        "model.config.num_key_value_heads=4",
        "data.micro_batch_size=4",
        "data.seq_len=256",
    ],  # bench/stage_speed.py's size
}

WORKER = r"""
import json, sys, types, torch
from transformers import LlamaConfig, LlamaForCausalLM
from eeve.config import StageConfig, to_object
from eeve.model.split import split_vocab
from eeve.training.adapters import attach_adapter
from eeve.training.groups import set_trainable
from eeve.training.module import _eeve_losses

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

def build(config, vocab, base, trainable, ckpt, stage):
    model = LlamaForCausalLM(LlamaConfig(**{**config, "vocab_size": vocab}))
    split_vocab(model, base)
    attach_adapter(model, stage, seed=0)  # nothing unless the stage trains LoRA adapters
    set_trainable(model, trainable)
    model.config.use_cache = False
    model.train()
    model.eeve_losses = types.MethodType(_eeve_losses, model)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model

def steps(model, n, batch, seq_len, vocab, backbone_grad):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq_len))
        loss, _ = model.eeve_losses(ids[:, :-1], ids[:, 1:], backbone_grad)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

a = json.loads(sys.argv[1])
stage = to_object(StageConfig, a["stage"])
torch.manual_seed(0)
backbone_grad = any(g in a["trainable"] for g in ("old_input", "new_input", "transformer"))
small = dict(a["config"], hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1)
steps(build(small, 600, 500, a["trainable"], a["ckpt"], stage), 1, 2, 16, 600, backbone_grad)  # thread pools, kernels
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
model = build(a["config"], a["vocab"], a["base"], a["trainable"], a["ckpt"], stage)
steps(model, a["steps"], a["batch"], a["seq_len"], a["vocab"], backbone_grad)
print(json.dumps({"peak": status("VmHWM") - before}))
"""


def compose(*overrides: str):
    """The training config `python train.py <overrides>` composes (paths need no Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from eeve.config import register_configs, to_train_config

    register_configs()
    overrides = tuple(f"stage='{o[6:]}'" if o.startswith("stage=") else o for o in overrides)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(
            hydra_compose("config", overrides=[f"paths.root={ROOT}", "paths.run_dir=unused", *overrides])
        )


def stage_config(size: str, stage: int | str, checkpointing: bool):
    return compose(
        f"stage={stage}",
        "trainer.accelerator=cpu",
        f"plan.vocab_size={VOCAB}",
        f"model.activation_checkpointing={str(checkpointing).lower()}",
        *SIZES[size],
    )


def measured_peak(cfg, steps: int = 3) -> int:
    """Peak bytes of ``steps`` real training steps of the stage `cfg` describes (see the module docstring); from
    the second step on, every step holds what the peak holds (weights, AdamW's state, gradients, activations)."""
    args = {
        "config": dict(cfg.model.config),
        "vocab": VOCAB,
        "base": cfg.model.config["vocab_size"],
        "trainable": list(cfg.stage.trainable),
        "ckpt": cfg.model.activation_checkpointing,
        "batch": cfg.data.micro_batch_size,
        "seq_len": cfg.data.seq_len,
        "steps": steps,
        "stage": dataclasses.asdict(cfg.stage),
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(args)], capture_output=True, text=True, env=env, timeout=600
    )
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])["peak"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--stages", default="1,2,4,6,7,6_lora")
    a = ap.parse_args()
    from eeve.training.plan import plan_stage

    print("| model | stage | checkpointing | plan MiB | measured MiB | plan / measured |")
    print("|---|---|---|---:|---:|---:|")
    for size in a.sizes.split(","):
        for ckpt in (False, True):
            for stage in a.stages.split(","):
                if ckpt and stage in ("2", "4"):  # no backward through the backbone: nothing to recompute
                    continue
                cfg = stage_config(size, stage, ckpt)
                plan, peak = plan_stage(cfg).peak, measured_peak(cfg)
                print(
                    f"| {size} | {stage} | {'on' if ckpt else 'off'} | {plan / 2**20:,.1f} | {peak / 2**20:,.1f} | "
                    f"{plan / peak:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
