"""What the init methods that run the base model read: a sample of the training mixture, both tokenizers, and the
new tokens' corpus frequencies (``expansion.json``). Built only for methods that ask for it (``needs_data``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from eeve.config import InitOptions, SourceConfig
from eeve.model.init import INIT_METHODS
from eeve.text.corpus import iter_documents
from eeve.tokenizer.info import tokenizer_info


@dataclass
class InitData:
    texts: list[str]
    """Documents of the training mixture, each source contributing in proportion to its ratio (its first ones)."""
    expanded: object
    """eeve.tokenizer.info.TokenizerInfo of the expanded tokenizer."""
    base: object
    """TokenizerInfo of the base tokenizer (``<tokenizer>/base_tokenizer``)."""
    frequencies: dict[int, int] = field(default_factory=dict)
    """New token id -> count over the tokenizer's corpus."""
    options: InitOptions = field(default_factory=InitOptions)


def sample_documents(sources: dict[str, SourceConfig], documents: int, base_dir: Path | None) -> list[str]:
    """``documents`` documents in all: the first ``round(ratio share x documents)`` of each source (read whole:
    paths, text_field, format, split, name), interleaved so that every prefix of the list keeps the mixture."""
    total = sum(s.ratio for s in sources.values()) or 1.0
    per = []
    for s in sources.values():
        n = max(1, round(documents * s.ratio / total)) if s.ratio > 0 else 0
        per.append(list(itertools.islice(iter_documents(s, base_dir=base_dir), n)))
    # interleave: document k of a source sits at k / len(source), so every prefix keeps the mixture
    keyed = [(k / len(p), i, doc) for i, p in enumerate(per) for k, doc in enumerate(p)]
    out = [doc for _, _, doc in sorted(keyed, key=lambda x: (x[0], x[1]))]
    return out[:documents]


def init_inputs(cfg, tokenizer_dir: Path, expansion: dict) -> dict:
    """Keyword arguments for ``expand_model`` beyond the defaults: ``data=InitData`` for methods that need it."""
    method = INIT_METHODS.get(cfg.init)
    if method is None or not getattr(method, "needs_data", False):
        return {}

    tokenizer_dir = Path(tokenizer_dir)
    root = Path(cfg.paths.root)
    texts = sample_documents(cfg.data.sources, cfg.init_options.documents, root)
    freqs = {int(t["id"]): int(t.get("frequency", 0) or 0) for t in expansion["new_tokens"]}
    return {
        "data": InitData(
            texts,
            tokenizer_info(tokenizer_dir),
            tokenizer_info(tokenizer_dir / "base_tokenizer"),
            freqs,
            cfg.init_options,
        )
    }
