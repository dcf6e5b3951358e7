"""A small GPT-2-style byte-level BPE base, trained from demo text: the second base kind the tests and
``bench/target_languages.py`` expand (no byte-level tokenizer comes from the registries the demo uses).

It has the conventions of GPT-2/SmolLM-style bases: a ByteLevel pre-tokenizer with GPT-2's split regex, every byte
an alphabet symbol, an ``<|endoftext|>`` special token and no BOS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def train_byte_level_base(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 3000) -> Path:
    """Train the base on ``texts`` and write a HF folder (tokenizer.json, tokenizer_config.json) to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": None}))
    return out
