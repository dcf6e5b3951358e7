"""An English-centric debug base model for the demo: `python -m eeve.demo.tiny_base`.

EEVE starts from a model that already knows English (SOLAR-10.7B) and has seen little Korean. A randomly
initialised model has nothing to preserve and no meaningful subword rows to initialise from, so the demo first
pre-trains the debug-size Llama (conf/model/tiny.yaml) with the *base* tokenizer on the demo's English prose plus
a little Korean (10 % of sequences, as SOLAR's Mistral base saw some), for about 2½ minutes on 2 CPU cores. The
result is a standard HF folder (model + base tokenizer) that `model=tiny_pretrained` loads like any checkpoint.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from eeve.console import eta_line, plain_stderr
from eeve.demo.data import default_root, ensure_demo_data
from eeve.io import atomic_dir
from eeve.tokenizer.base import load_base, write_hf_folder
from eeve.tokenizer.info import TokenizerInfo

ROOT = Path(__file__).resolve().parents[3]


def pack(info, lines: list[str], seq_len: int) -> torch.Tensor:
    """BOS + ids + EOS per document (as the data module packs), concatenated and cut into [n, seq_len]."""
    ids = [i for doc in info.encode_docs(lines) for i in doc]
    n = len(ids) // seq_len
    return torch.tensor(np.asarray(ids[: n * seq_len], dtype=np.int64)).view(n, seq_len)


@torch.no_grad()
def bits_per_byte(model, seqs: torch.Tensor, token_bytes: torch.Tensor) -> float:
    logits = model(seqs[:, :-1]).logits.float()
    nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), seqs[:, 1:].flatten(), reduction="sum")
    return nats.item() / math.log(2) / token_bytes[seqs[:, 1:]].sum().item()


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps (batch x seq_len tokens each)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--korean-share", type=float, default=0.1, help="fraction of training sequences in Korean")
    ap.add_argument("--out", type=Path, default=None, help="default: <cache>/demo/tiny_base")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    args = ap.parse_args(argv)

    demo = ensure_demo_data()
    out = args.out or default_root() / "demo" / "tiny_base"
    if (out / "config.json").is_file() and not args.force:
        print(f"tiny base: {out} exists (--force rebuilds)")
        return out
    torch.manual_seed(0)
    with atomic_dir(out) as tmp:  # built beside `out`, renamed into place when complete
        _train_into(tmp, demo, args)
    print(f"tiny base: saved {out}")
    return out


def _train_into(tmp: Path, demo: Path, args) -> None:
    from omegaconf import OmegaConf
    from transformers import LlamaConfig, LlamaForCausalLM

    base = load_base(demo / "base_tokenizer" / "tokenizer.model")
    write_hf_folder(base.tokenizer_json, base.config, tmp)  # the model's own tokenizer travels with it
    info = TokenizerInfo(tmp)
    read = lambda p: [x for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]  # noqa: E731
    en, ko = (pack(info, read(demo / lang / "train.txt"), args.seq_len) for lang in ("en", "ko"))
    val = {lang: pack(info, read(demo / lang / "heldout.txt"), args.seq_len)[:32] for lang in ("en", "ko")}
    token_bytes = torch.from_numpy(info.token_bytes())

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml").config)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    before = {k: bits_per_byte(model, v, token_bytes) for k, v in val.items()}
    rng = np.random.default_rng(0)
    n_ko = max(1, round(args.batch * args.korean_share))
    every = max(1, args.steps // 30)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        batch = torch.cat([en[rng.integers(0, len(en), args.batch - n_ko)], ko[rng.integers(0, len(ko), n_ko)]])
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % every == 0 or step + 1 == args.steps:  # about 30 lines, each with an ETA
            print(eta_line("tiny base:", step + 1, args.steps, time.time() - t0, f"loss {loss.item():.3f}"), flush=True)
    model.eval()
    after = {k: bits_per_byte(model, v, token_bytes) for k, v in val.items()}
    print(
        "tiny base: held-out bits per byte "
        + ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in val)
        + f"; {args.steps * args.batch * args.seq_len:,} tokens in {time.time() - t0:.0f} s"
    )

    model.save_pretrained(tmp)


if __name__ == "__main__":
    plain_stderr()  # no "Writing model shards" redraws in a log
    main()
