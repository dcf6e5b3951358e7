"""How many base-model tokens ``init=mass_first_piece`` needs to read: Korean and English bits per byte of the
expanded model before any training, per teacher sample size, against the base and ``mean_subwords``, all on the
same held-out bytes.

    .venv/bin/python bench/teacher_sample.py MODEL_DIR TOKENIZER_DIR [--sizes 1024,2048,8192] [--eval-bytes 12000]
        [--train .cache/demo/ko/train.txt] [--heldout .cache/demo/ko/heldout.txt]

TOKENIZER_DIR is MODEL_DIR's expanded tokenizer (``bench/recipes.py`` leaves it in outputs/tokenize/<run>/tokenizer).
The teacher reads the training mixture with ``--train`` as its Korean source (English replay as configured). The
evaluation is the first ``--eval-bytes`` of each held-out text (Korean ``--heldout``, the demo's English), in
512-token windows. Every size costs one teacher pass over that many tokens: a FLOP budget pays for it
(eeve.training.flops). Run from the repository root; a 270M model takes about 2 minutes a size on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def first_bytes(path: Path, n: int) -> list[str]:
    text = path.read_bytes()[:n].decode("utf-8", "ignore")
    return [d for d in text.split("\n") if d.strip()]


def compose(model_dir: str, tok_dir: str, train: Path, run_dir: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from eeve.config import register_configs, to_train_config

    register_configs()
    over = [
        f"paths.root={ROOT}",
        f"paths.run_dir={run_dir}",
        f"tokenizer.path={tok_dir}",
        f"model.name_or_path={model_dir}",
        f"model.tokenizer={model_dir}",
        f"data.sources.ko_web.paths=[{train}]",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return to_train_config(hydra_compose("config", overrides=over))


def expanded_bpb(cfg, tok_dir: str, init: str, docs: dict) -> dict:
    from tokenizers import Tokenizer

    from eeve.eval.bpb import evaluate_bpb
    from eeve.model.expand import expand_model, read_expansion
    from eeve.model.init_data import init_inputs
    from eeve.model.load import load_base_model

    exp = read_expansion(tok_dir)
    base_tok = Tokenizer.from_file(str(Path(tok_dir) / "base_tokenizer" / "tokenizer.json"))
    model = expand_model(
        load_base_model(cfg.model),
        base_tok,
        exp["new_tokens"],
        exp["base_vocab_size"],
        init=init,
        vocab_size=exp["vocab_size"],
        **init_inputs(cfg, Path(tok_dir), exp),
    )
    return {lang: r["bpb"] for lang, r in evaluate_bpb(model, tok_dir, docs, window=512).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("tokenizer_dir")
    ap.add_argument("--sizes", default="1024,2048,8192")
    ap.add_argument("--eval-bytes", type=int, default=12000)
    ap.add_argument("--train", type=Path, default=ROOT / ".cache/demo/ko/train.txt")
    ap.add_argument("--heldout", type=Path, default=ROOT / ".cache/demo/ko/heldout.txt")
    a = ap.parse_args()

    from eeve.eval.bpb import evaluate_bpb
    from eeve.model.load import load_base_model

    docs = {
        "ko": first_bytes(a.heldout, a.eval_bytes),
        "en": first_bytes(ROOT / ".cache/demo/en/heldout.txt", a.eval_bytes),
    }
    cfg = compose(a.model_dir, a.tokenizer_dir, a.train.resolve(), tempfile.mkdtemp(prefix="teacher_sample-"))
    base = {k: r["bpb"] for k, r in evaluate_bpb(load_base_model(cfg.model), a.model_dir, docs, window=512).items()}
    langs = list(docs)
    print("| init | teacher tokens | " + " | ".join(f"{lang} BPB (vs base)" for lang in langs) + " | seconds |")
    print("|---|---|" + "---|" * (len(langs) + 1))
    print("| base model | | " + " | ".join(f"{base[lang]:.4f}" for lang in langs) + " | |")
    runs = [("mass_first_piece", int(n)) for n in a.sizes.split(",")] + [("mean_subwords", None)]
    for init, n in runs:
        t0 = time.time()
        cfg.init_options.teacher_tokens = n
        bpb = expanded_bpb(cfg, a.tokenizer_dir, init, docs)
        cells = [f"{bpb[lang]:.4f} ({100 * (bpb[lang] / base[lang] - 1):+.2f} %)" for lang in langs]
        print(f"| {init} | {n or ''} | " + " | ".join(cells) + f" | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
