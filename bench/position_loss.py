"""Where a stage export loses or gains on the evaluation's held-out text: per language, nats per token at each
document's first 4 scored positions and after them, and the mean probability the model puts on the new tokens.

    .venv/bin/python bench/position_loss.py RUN_DIR [--stages 5,7]

RUN_DIR is a ``train.py`` run folder (``.hydra/config.yaml`` and ``stage<N>/`` exports). The text is the run's
evaluation text (``eval.bytes`` of each ``data.validation`` language, the bytes every model is compared on), cut
and scored as ``eeve.eval.bpb`` does (each document alone, BOS + windows of ``eval.window`` tokens). Used to tell
a model that forgets a language in context (later positions worse) from one whose first-token prior moved, or one
that gives the new tokens mass in that language. Run from the repository root; a 270M model takes about a minute
per stage on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FIRST = 4  # scored positions counted as a document's start


def main() -> None:
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from eeve.config import ValConfig
    from eeve.eval.bpb import encode_windows, load_tokenizer
    from eeve.eval.texts import heldout_texts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--stages", default="5,7")
    a = ap.parse_args()
    cfg = OmegaConf.load(a.run_dir / ".hydra" / "config.yaml")
    fields = ValConfig.__dataclass_fields__
    val = {
        lang: ValConfig(**{k: v for k, v in OmegaConf.to_container(entry).items() if k in fields})
        for lang, entry in cfg.data.validation.items()
    }
    texts = heldout_texts(val, int(cfg.eval.bytes), base_dir=ROOT)
    for stage in a.stages.split(","):
        export = a.run_dir / f"stage{stage}"
        info = load_tokenizer(export)
        base_vocab = json.loads((export / "expansion.json").read_text())["base_vocab_size"]
        model = AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32).eval()
        for lang, docs in texts.items():
            rows, _ = encode_windows(info, docs, int(cfg.eval.window))
            sums = torch.zeros(5, dtype=torch.float64)  # new-token mass, nats first, n first, nats later, n later
            with torch.no_grad():
                for row in rows:
                    x = torch.tensor([row])
                    logp = model(x).logits[0, :-1].float().log_softmax(-1)
                    nats = -logp.gather(-1, x[0, 1:, None])[:, 0]
                    sums += torch.tensor(
                        [
                            float(logp[:, base_vocab:].exp().sum()),
                            float(nats[:FIRST].sum()),
                            min(FIRST, len(nats)),
                            float(nats[FIRST:].sum()),
                            max(0, len(nats) - FIRST),
                        ],
                        dtype=torch.float64,
                    )
            mass, n_first, n_later = sums[0] / (sums[2] + sums[4]), sums[2], sums[4]
            print(
                f"stage {stage} {lang}: nats/token at positions 1-{FIRST} {sums[1] / n_first:.3f} ({int(n_first)}), "
                f"after {sums[3] / max(n_later, 1):.3f} ({int(n_later)}); mass on new tokens {mass:.4f}",
                flush=True,
            )
        del model


if __name__ == "__main__":
    main()
