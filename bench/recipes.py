"""The recipes compared at equal FLOPs on a real pretrained model: eeve (the project's defaults), eeve_paper,
full and no_expansion, on one Korean corpus, then ``python -m eeve.compare`` over the runs.

    .venv/bin/python bench/recipes.py MODEL_DIR --corpus help|law [--steps 24] [--seq 256] [--batch 4]
        [--recipes eeve,eeve_paper,full,no_expansion] [--seed 1234] [--tag T] [--eval-bytes 20000] [--val-seqs 8]
        [-- train.py overrides ...]

Corpora (Korean, two domains; English replay and the English held-out text are the demo's for both):
  help  the demo's Korean (LibreOffice help pages + konlpy law texts): .cache/demo/ko/{train,heldout}.txt
  law   konlpy's Korean law corpus only (the constitution and nine bills for training, bills 1809896 and 1809899
        held out), from the konlpy wheel the demo data already downloaded: .cache/corpora/law/
The budget: FLOPs = ``--steps`` full-model steps (forward + backward of every parameter) of ``--batch`` x
``--seq`` tokens on the expanded model; every recipe gets exactly that (``budget.flops``), spread over its stages
by the recipe's ``budget.shares`` (conf/recipe/; a stage's overspend comes off the next stage's share).
1. builds the corpus's expanded tokenizer for MODEL_DIR (``tokenize.py``, kept in outputs/tokenize/<run>/);
2. runs ``train.py stage=all recipe=<r> budget.flops=F`` per recipe into outputs/<run>-<r>[-s<seed>]/ (evaluation
   on the same ``--eval-bytes`` per language; benchmarks off; validation at each stage's start and end only);
3. prints ``python -m eeve.compare`` over the runs (table + outputs/<run>-compare.png).
Too slow for CI (a 135M model: about 40 minutes for four recipes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LAW_HELDOUT = ("kobill/1809896.txt", "kobill/1809899.txt")


def sh(args: list[str], log: Path) -> None:
    print("$", " ".join(args), flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        r = subprocess.run(
            args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
        )
    print(f"  ({time.time() - t0:.0f} s, exit {r.returncode}, log {log})", flush=True)
    if r.returncode:
        sys.exit(f"failed: see {log}")


def law_corpus(cache: Path) -> tuple[Path, Path]:
    """konlpy's law texts: one non-empty line = one document; two bills held out."""
    from eeve.demo.data import ensure_demo_data

    out = cache / "corpora" / "law"
    if not (out / "heldout.txt").is_file():
        ensure_demo_data()
        wheel = next((cache / "downloads" / "wheels").glob("konlpy-*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        train, held = [], []
        with zipfile.ZipFile(wheel) as z:
            for n in sorted(z.namelist()):
                if n.startswith("konlpy/data/corpus/") and n.endswith(".txt"):
                    lines = [" ".join(x.split()) for x in z.read(n).decode("utf-8").splitlines()]
                    (held if n.endswith(LAW_HELDOUT) else train).extend(x for x in lines if x)
        (out / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
        (out / "heldout.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
    return out / "train.txt", out / "heldout.txt"


def corpus_files(name: str) -> tuple[Path, Path]:
    cache = ROOT / ".cache"
    if name == "law":
        return law_corpus(cache)
    return cache / "demo" / "ko" / "train.txt", cache / "demo" / "ko" / "heldout.txt"


def flop_budget(model_dir: Path, tok_dir: Path, steps: int, batch: int, seq: int) -> float:
    import json

    from eeve.training.flops import stage_flops_per_token

    exp = json.loads((tok_dir / "expansion.json").read_text())
    cfg = json.loads((model_dir / "config.json").read_text())
    groups = ["old_input", "new_input", "old_output", "new_output", "transformer"]
    per = stage_flops_per_token(cfg, groups, exp["base_vocab_size"], exp["vocab_size"], seq)["per_token"]
    return per * steps * batch * seq  # exact: a rounded-up budget buys a stage one more whole step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--corpus", default="help", choices=["help", "law"])
    ap.add_argument("--run", default=None, help="run name prefix (default: <model folder>-<corpus>)")
    ap.add_argument("--recipes", default="eeve,eeve_paper,full,no_expansion")
    ap.add_argument("--steps", type=int, default=24, help="budget: this many full-model steps' FLOPs")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=None, help="seed (default: the configured one; adds -s<seed>)")
    ap.add_argument("--tag", default="", help="appended to each run folder (a variant: outputs/<run>-<recipe>-<tag>)")
    ap.add_argument("--eval-bytes", type=int, default=20000)
    ap.add_argument("--val-seqs", type=int, default=8)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    model_dir = Path(a.model_dir).resolve()
    run = a.run or f"{model_dir.name}-{a.corpus}"
    train, held = corpus_files(a.corpus)
    logs = ROOT / "outputs" / "bench_logs"
    logs.mkdir(parents=True, exist_ok=True)
    tok_dir = ROOT / "outputs" / "tokenize" / run / "tokenizer"
    py = sys.executable
    if not (tok_dir / "expansion.json").is_file():
        sh(
            [
                py,
                "tokenize.py",
                f"run_name={run}",
                f"base_tokenizer={model_dir}",
                f"corpus.paths=[{train}]",
                f"heldout.ko={held}",
                "progress=false",
            ],
            logs / f"{run}-tokenize.log",
        )
    flops = flop_budget(model_dir, tok_dir, a.steps, a.batch, a.seq)
    print(f"budget: {flops:.4g} FLOPs (= {a.steps} full-model steps of {a.batch} x {a.seq} tokens)", flush=True)
    common = [
        f"model.name_or_path={model_dir}",
        f"model.tokenizer={model_dir}",
        f"data.sources.ko_web.paths=[{train}]",
        f"data.validation.ko.paths=[{held}]",
        f"data.seq_len={a.seq}",
        f"data.micro_batch_size={a.batch}",
        f"data.validation.ko.max_sequences={a.val_seqs}",
        f"data.validation.en.max_sequences={a.val_seqs}",
        f"eval.bytes={a.eval_bytes}",
        "eval.tasks=[]",
        "trainer.val_every_n_steps=100000",
        f"budget.flops={flops}",
        *([f"seed={a.seed}"] if a.seed is not None else []),
        *extra,
    ]
    runs = []
    out = ROOT / "outputs" / (f"{run}-compare" + (f"-{a.tag}" if a.tag else ""))
    for recipe in [r.strip() for r in a.recipes.split(",") if r.strip()]:
        name = f"{run}-{recipe}" + (f"-s{a.seed}" if a.seed is not None else "") + (f"-{a.tag}" if a.tag else "")
        tok = [] if recipe == "no_expansion" else [f"tokenizer.path={tok_dir}"]
        sh(
            [
                py,
                "train.py",
                "stage=all",
                f"recipe={recipe}",
                f"run_name={run}",
                f"hydra.run.dir=outputs/{name}",
                *tok,
                *common,
            ],
            logs / f"{name}.log",
        )
        runs.append(str(ROOT / "outputs" / name))
    sh(
        [py, "-m", "eeve.compare", *runs, "--out", str(out)],
        logs / f"{out.name}.log",
    )
    print((out / "compare.md").read_text() if (out / "compare.md").is_file() else "")


if __name__ == "__main__":
    main()
