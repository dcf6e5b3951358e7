"""Generation throughput in characters per second: the base model with its own tokenizer against each stage export.

    .venv/bin/python bench/generation_speed.py [--base .cache/demo/tiny_base] [--run outputs/demo] [--chars 200]
        [--prompts 4] [--repeats 3] [--threads 2] [--stages 1,2,...,7]

What users feel of vocabulary expansion: the same model size (the stages only add vocabulary rows), greedy decoding
with the KV cache, one prompt at a time, each model producing the same number of characters: generation stops at
the first step where the continuation decodes to at least ``--chars`` characters (EOS is suppressed, so every model
writes that much). chars/s = characters produced / wall time of ``generate``, summed over the prompts; the median
of ``--repeats`` passes. Prompts: the first ``--prompts`` held-out paragraphs of each language (demo data), cut to
their first 60 characters. Prints one row per model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class EnoughChars:
    """Stops generation once the new tokens decode to at least ``chars`` characters (batch of one)."""

    def __init__(self, tok, start: int, chars: int):
        self.tok, self.start, self.chars, self.produced = tok, start, chars, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.produced = len(self.tok.decode(input_ids[0, self.start :].tolist(), skip_special_tokens=True))
        return torch.tensor([self.produced >= self.chars], device=input_ids.device)


def generate_chars(model, info, prompt: str, chars: int) -> tuple[float, int, int]:
    """(seconds, characters produced, tokens produced) for one greedy continuation of ``prompt``."""
    from transformers import StoppingCriteriaList

    ids = ([info.bos_id] if info.bos_id is not None else []) + info.tok.encode(prompt, add_special_tokens=False).ids
    x = torch.tensor([ids])
    stop = EnoughChars(info.tok, x.shape[1], chars)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            do_sample=False,
            max_new_tokens=6 * chars,
            stopping_criteria=StoppingCriteriaList([stop]),
            suppress_tokens=[info.eos_id],
            pad_token_id=info.eos_id,
        )
    return time.perf_counter() - t0, stop.produced, y.shape[1] - x.shape[1]


def main() -> None:
    from transformers import AutoModelForCausalLM

    from eeve.eval.bpb import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / ".cache" / "demo" / "tiny_base")
    ap.add_argument("--run", type=Path, default=ROOT / "outputs" / "demo", help="run folder holding stage<N>/ exports")
    ap.add_argument("--data", type=Path, default=ROOT / ".cache" / "demo")
    ap.add_argument("--chars", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default="1,2,3,4,5,6,7", help="which stage exports of --run to time (with the base)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    prompts = {
        lang: [
            x[:60] for x in (args.data / lang / "heldout.txt").read_text(encoding="utf-8").splitlines() if len(x) >= 60
        ][: args.prompts]
        for lang in ("ko", "en")
    }
    models = [("base", args.base)] + [
        (f"stage {n}", args.run / f"stage{n}")
        for n in [x.strip() for x in args.stages.split(",") if x.strip()]
        if (args.run / f"stage{n}" / "config.json").is_file()
    ]
    rows = {}
    for name, folder in models:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        info = load_tokenizer(folder)
        rows[name] = {}
        for lang, ps in prompts.items():
            generate_chars(model, info, ps[0], 20)  # warm-up
            passes = []
            for _ in range(args.repeats):
                res = [generate_chars(model, info, p, args.chars) for p in ps]
                passes.append((sum(r[0] for r in res), sum(r[1] for r in res), sum(r[2] for r in res)))
            secs = statistics.median(p[0] for p in passes)
            rows[name][lang] = {"chars_per_s": passes[0][1] / secs, "chars": passes[0][1], "tokens": passes[0][2]}
        print(
            f"{name}: "
            + ", ".join(
                f"{lang} {r['chars_per_s']:.0f} chars/s ({r['tokens']} tokens for {r['chars']} chars)"
                for lang, r in rows[name].items()
            ),
            file=sys.stderr,
        )
    base = rows["base"]
    print(
        f"\n{args.prompts} prompts x {args.chars} characters per language, greedy, median of {args.repeats}, "
        f"{args.threads} threads\n"
    )
    print("| model | ko chars/s | ko tokens | ko vs base | en chars/s | en tokens | en vs base |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells = []
        for lang in ("ko", "en"):
            cells += [
                f"{r[lang]['chars_per_s']:.0f}",
                f"{r[lang]['tokens']}",
                f"x{r[lang]['chars_per_s'] / base[lang]['chars_per_s']:.2f}",
            ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
