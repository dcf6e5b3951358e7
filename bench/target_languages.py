"""Characters per token before and after expansion, per target language, for both base kinds.

    .venv/bin/python bench/target_languages.py [--langs ko ja zh-cn hi ru vi] [--out DIR]

For each language of the demo data (``python -m eeve.demo.data lang=<lang>``, fetched on first use) it builds the
expanded tokenizer with the demo defaults (intermediate_vocab_size=12000, min_frequency=10) on the whole
``demo/<lang>/train.txt``, once per base:

* the Mistral/SOLAR SentencePiece base (``.cache/demo/base_tokenizer/tokenizer.model``), i.e.
  ``python tokenize.py target.scripts=[...] corpus.paths=[.cache/demo/<lang>/train.txt] heldout.ko=null
  +heldout.<lang>=.cache/demo/<lang>/heldout.txt``;
* an English-centric GPT-2-style byte-level BPE (16,000 tokens) trained on the demo English plus the first 10 % of
  the language's training lines, as the demo's tiny base knows a little Korean (no byte-level base ships with the
  registries the demo uses).

It prints one markdown table: held-out characters per token base -> expanded, the share of new tokens in the
expanded encoding of the held-out text, and the identity check (held-out lines of the language and of English,
target characters removed, that encode differently from the base: must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build(lang: str, base: Path, demo: Path, out: Path) -> dict:
    from eeve.demo.data import DEFAULT_LANG, LANGUAGES
    from eeve.tokenizer.run import run_from_config

    folder = demo / lang
    spec = LANGUAGES[lang]
    heldout = {lang: str(folder / "heldout.txt"), "en": str(demo / "en" / "heldout.txt")}
    if lang != DEFAULT_LANG:
        heldout["ko"] = None
    t0 = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # the build's log; stdout is the table
        run_from_config(
            {
                "base_tokenizer": str(base),
                "corpus": {"paths": [str(folder / "train.txt")]},
                "target": {"scripts": list(spec.scripts), "ranges": list(spec.ranges)},
                "heldout": heldout,
                "output_dir": str(out),
                "progress": False,
            }
        )
    rep = json.loads((out / "expansion.json").read_text(encoding="utf-8"))
    return {"report": rep, "seconds": time.time() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--langs", nargs="+", default=["ko", "ja", "zh-cn", "hi", "ru", "vi"])
    ap.add_argument("--out", type=Path, default=None, help="keep the tokenizers here (default: a temporary folder)")
    args = ap.parse_args()

    from eeve.demo.byte_level import train_byte_level_base
    from eeve.demo.data import LANGUAGES, ensure_demo_data

    def lines(path: Path) -> list[str]:
        return [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for lang in args.langs:
            demo = ensure_demo_data(lang=lang)
            train = lines(demo / lang / "train.txt")
            bl_base = train_byte_level_base(
                lines(demo / "en" / "train.txt") + train[: len(train) // 10],
                out / f"byte_level_base_{lang}",
                vocab_size=16000,
            )
            spec = LANGUAGES[lang]
            target = ",".join(spec.scripts) if spec.scripts else f"{len(spec.ranges)} ranges"
            for kind, base in (
                ("SentencePiece (Mistral)", demo / "base_tokenizer" / "tokenizer.model"),
                ("byte-level BPE", bl_base),
            ):
                res = build(lang, base, demo, out / f"{lang}_{'sp' if 'Mistral' in kind else 'bl'}")
                rep = res["report"]
                c, e = rep["compression"][lang], rep["compression"]["en"]
                rows.append(
                    f"| {lang} | {target} | {kind} | {rep['corpus']['text_bytes'] / 1e6:.2f} | "
                    f"{rep['num_new_tokens']:,} | {c['base_chars_per_token']:.3f} → "
                    f"{c['expanded_chars_per_token']:.3f} (×{c['ratio']:.2f}) | {c['new_token_share']:.0%} | "
                    f"{e['base_chars_per_token']:.3f} → {e['expanded_chars_per_token']:.3f} | "
                    f"{c['non_target_mismatches'] + e['non_target_mismatches']}/"
                    f"{c['non_target_lines_checked'] + e['non_target_lines_checked']} | {res['seconds']:.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    print(
        "| lang | target | base | corpus MB | new tokens | held-out chars/token | new-token share | "
        "English chars/token | lines differing w/o target chars | build s |"
    )
    print("|---|---|---|---:|---:|---|---:|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
