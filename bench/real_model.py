"""EEVE on a real pretrained model: Korean and English bits per byte per stage, against the base model.

    .venv/bin/python bench/real_model.py MODEL_DIR [--run NAME] [--inits mass_first_piece,mean_subwords]
        [--stages 1,2,...,7] [--steps 30] [--seq 256] [--batch 4] [--val-seqs 32] [--eval-bytes 60000] [--tasks]
        [--step0] [-- train.py overrides ...]

1. builds the expanded tokenizer on the demo's Korean for MODEL_DIR (``tokenize.py base_tokenizer=MODEL_DIR``;
   kept in outputs/tokenize/<run>/ once built);
2. for each ``--inits`` value runs ``train.py stage=all`` with the project's default stage configs and only the
   budget overridden (``stage.max_steps``, ``data.seq_len``, ``data.micro_batch_size``; validation on the first
   ``--val-seqs`` packed held-out sequences per language), into outputs/<run>-<init>/;
   ``--step0`` instead only expands and validates (the model before any training, for init ablations);
3. prints two base-relative tables per init:
   - the run's evaluation table (eeve.eval: the base model with its own tokenizer, the expanded model before
     training and every stage export, on the same ``--eval-bytes`` of held-out text per language, 512-token
     windows): the figures the README quotes;
   - the stages' own validation (the first ``--val-seqs`` packed sequences, what the English guard watches), with
     the base scored on the same bytes (eeve.training.guard.base_validation_bpb).
   ``--inits`` defaults to the configured ``init``; benchmarks (eval.tasks) are off unless ``--tasks``.

Too slow for CI (a 135M model: about an hour for seven stages on 2 busy CPU cores). Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from eeve.eval.table import eval_table  # noqa: E402


def sh(args: list[str], log: Path) -> None:
    print("$", " ".join(args), flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        r = subprocess.run(
            args,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"},
        )
    print(f"  ({time.time() - t0:.0f} s, exit {r.returncode}, log {log})", flush=True)
    if r.returncode:
        sys.exit(f"failed: see {log}")


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from eeve.config import register_configs, to_train_config

    register_configs()
    overrides = [f"stage='{o[6:]}'" if o.startswith("stage=") else o for o in overrides]
    if not any(o.startswith("paths.run_dir=") for o in overrides):  # no Hydra run here to supply it
        overrides.append(f"paths.run_dir={ROOT / 'outputs'}")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(hcompose("config", overrides=[f"paths.root={ROOT}", *overrides]))


def step0(cfg) -> dict:
    """Validation of the expanded model before any training (what stage 1 starts from)."""
    import lightning as L

    from eeve.data.datamodule import EEVEDataModule
    from eeve.layout import resolve
    from eeve.model.expand import read_expansion
    from eeve.training.module import EEVEModule
    from eeve.training.stages import build_stage_model

    tok = resolve(cfg.tokenizer.path, cfg.paths.root)
    exp = read_expansion(tok)
    dm = EEVEDataModule(cfg.data, tok, resolve(cfg.paths.cache_dir, cfg.paths.root), base_dir=Path(cfg.paths.root))
    holder = {}

    def build():
        holder["model"] = build_stage_model(cfg, 1, tok, exp)
        return holder["model"]

    module = EEVEModule(cfg, cfg.stage, build, exp["base_vocab_size"], dm.token_bytes, dm.val_names, 1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    summary = getattr(holder["model"], "eeve_expansion", None)
    return {"val": dict(module.last_val), "init_stats": summary.method_stats if summary else {}}


def base_bpb(cfg) -> dict:
    from eeve.data.datamodule import EEVEDataModule
    from eeve.layout import resolve
    from eeve.training.guard import base_validation_bpb

    tok = resolve(cfg.tokenizer.path, cfg.paths.root)
    dm = EEVEDataModule(cfg.data, tok, resolve(cfg.paths.cache_dir, cfg.paths.root), base_dir=Path(cfg.paths.root))
    return base_validation_bpb(cfg, dm, tok, resolve(cfg.paths.cache_dir, cfg.paths.root) / "base_bpb.json")


def row(label: str, val: dict, base: dict) -> str:
    cells = []
    for lang in ("ko", "en"):
        v = val.get(lang, {}).get("bpb")
        cells += ["–", "–"] if v is None else [f"{v:.4f}", f"{100 * (v / base[lang]['bpb'] - 1):+.1f} %"]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--run", default=None, help="run name (default: the model folder's name)")
    ap.add_argument("--inits", default=None, help="comma-separated init methods (default: the configured init)")
    ap.add_argument("--stages", default="1,2,3,4,5,6,7")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--val-seqs", type=int, default=32)
    ap.add_argument("--eval-bytes", type=int, default=60000, help="held-out bytes per language (eval.bytes)")
    ap.add_argument("--tasks", action="store_true", help="keep the configured benchmarks (eval.tasks)")
    ap.add_argument("--step0", action="store_true", help="only expand and validate (init ablation)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # train.py overrides, passed on as they are
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    a.overrides = extra
    model_dir = Path(a.model_dir).resolve()
    run = a.run or model_dir.name
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    logs = ROOT / "outputs" / "bench_logs"
    logs.mkdir(parents=True, exist_ok=True)
    tok_dir = ROOT / "outputs" / "tokenize" / run / "tokenizer"
    py = sys.executable
    if not (tok_dir / "expansion.json").is_file():
        sh(
            [py, "tokenize.py", f"run_name={run}", f"base_tokenizer={model_dir}", "progress=false"],
            logs / f"{run}-tokenize.log",
        )
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    common = [
        f"model.name_or_path={model_dir}",
        f"tokenizer.path={tok_dir}",
        f"stage.max_steps={a.steps}",
        f"data.seq_len={a.seq}",
        f"data.micro_batch_size={a.batch}",
        f"data.validation.ko.max_sequences={a.val_seqs}",
        f"data.validation.en.max_sequences={a.val_seqs}",
        f"eval.bytes={a.eval_bytes}",
        *([] if a.tasks else ["eval.tasks=[]"]),
        *a.overrides,
    ]
    results, tables = {}, {}
    inits = a.inits or compose(common).init
    for init in [i.strip() for i in inits.split(",") if i.strip()]:
        run_dir = ROOT / "outputs" / f"{run}-{init}"
        over = [*common, f"init={init}", f"paths.run_dir={run_dir}"]
        if a.step0:
            t0 = time.time()
            results[init] = {"step0": step0(compose(over)), "seconds": round(time.time() - t0)}
            print(init, json.dumps(results[init]), flush=True)
            continue
        sh(
            [
                py,
                "train.py",
                "stage=all",
                f"stages=[{','.join(repr(s) for s in stages)}]",
                f"run_name={run}-{init}",
                *over,
            ],
            logs / f"{run}-{init}.log",
        )
        results[init] = {n: json.loads((run_dir / f"stage{n}" / "metrics.json").read_text()) for n in stages}
        base_eval = run_dir / "stage0" / "metrics.json"
        tables[init] = eval_table(
            list(results[init].values()), json.loads(base_eval.read_text()) if base_eval.is_file() else None
        )
    base = base_bpb(compose(common))  # cached by the stages' English guard (keyed by model, tokenizer, bytes)
    t = json.loads((tok_dir / "expansion.json").read_text())
    print(
        f"\n{model_dir.name}: {t['num_new_tokens']:,} new tokens; {a.steps} steps x {a.batch} x {a.seq} tokens per "
        f"stage; validation: first {a.val_seqs} packed held-out sequences per language "
        f"(base scored on the same bytes: ko {base['ko']['bytes']:,} B, en {base['en']['bytes']:,} B)\n"
    )
    for init, table in tables.items():
        print(f"init={init}: evaluation, {a.eval_bytes:,} held-out bytes per language, 512-token windows\n")
        print(table, "\n")
    for init, res in results.items():
        print(f"init={init}: validation (what the guard watches)\n")
        print("| model | Korean BPB | vs base | English BPB | vs base |\n|---|---|---|---|---|")
        print(row("base model, base tokenizer", {k: v for k, v in base.items()}, base))
        if "step0" in res:
            print(row("after expansion", res["step0"]["val"], base))
            continue
        first = res[stages[0]]
        print(row("after expansion", first["val_start"], base))
        for n in stages:
            m = res[n]
            g = m.get("guard") or {}
            note = (
                f" (guard stopped at step {g['breach']['step']}, kept {g['exported_step']})"
                if g.get("breached")
                else ""
            )
            print(row(f"after stage {n}{note}", m["val_end"], base))
        print()
    out = ROOT / "outputs" / f"bench_real_model_{run}.json"
    out.write_text(json.dumps({"base": base, "results": results}, indent=1, default=str))
    print(f"raw: {out}")


if __name__ == "__main__":
    main()
