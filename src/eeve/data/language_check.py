"""The tokenizer–data check before training: text in the run's target language that the run's tokenizer gives no
new token is a wrong tokenizer (e.g. Japanese data under the Korean tokenizer), and stops the run in one line.

Which entries are checked: every training source with a ``lang`` (a tag such as ``ja`` or ``en-ja``) and every
validation set (its ``lang``, or its name), unless each part of the tag is a language the tokenizer was measured
on at build time and found no new token in (``expansion.json``'s ``compression``: the held-out languages of
``tokenize.py``, English by default). So the tokenizer's own target language, and any language it was not built
for, must show new tokens; English replay needs none. A check reads the first :data:`SAMPLE_BYTES` of the entry's
text (hub datasets are skipped: reading them costs a download). Runs without expansion (``recipe.expand=false``)
have no new tokens by design and are not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from eeve.config import TrainConfig
from eeve.errors import ConfigError
from eeve.text.corpus import SourceOptions, iter_documents

SAMPLE_BYTES = 65536
"""UTF-8 bytes of each entry's text that are tokenized (whole documents from the start; at least one)."""


def resolve(path: str, root: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def read_tokenizer(cfg: TrainConfig) -> tuple[Path, dict | None]:
    """(folder, expansion.json or None when the folder holds none: the stage reports that, after the model)."""
    folder = resolve(cfg.tokenizer.path, cfg.paths.root)
    p = folder / "expansion.json"
    return folder, json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def non_target_langs(expansion: dict) -> set[str]:
    """Languages whose held-out text had no new token when the tokenizer was built."""
    return {lang for lang, c in (expansion.get("compression") or {}).items() if not c.get("new_token_share")}


def needs_new_tokens(lang: str | None, non_target: set[str]) -> bool:
    """Whether text of ``lang`` must show new tokens: some part of its tag is not a measured non-target language."""
    return bool(lang) and any(part not in non_target for part in re.split(r"[-_+/,\s]+", lang) if part)


def new_token_share(tokenizer, base_vocab_size: int, entry, root: str) -> float | None:
    """New tokens among the tokens of the first :data:`SAMPLE_BYTES` of an entry's text; None when it has none."""
    docs, total = [], 0
    for doc in iter_documents(entry.paths, base_dir=root, options=SourceOptions.of(entry)):
        docs.append(doc)
        total += len(doc.encode("utf-8"))
        if total >= SAMPLE_BYTES:
            break
    ids = [i for enc in tokenizer.encode_batch(docs, add_special_tokens=False) for i in enc.ids]
    return sum(i >= base_vocab_size for i in ids) / len(ids) if ids else None


def check_languages(cfg: TrainConfig) -> None:
    """Stop with one line when a target-language entry has no new token under the run's tokenizer (module doc)."""
    if not cfg.recipe.expand:
        return
    folder, expansion = read_tokenizer(cfg)
    if not (expansion and expansion.get("compression")):  # none, or built without held-out text: no language known
        return
    non_target = non_target_langs(expansion)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    base = int(expansion["base_vocab_size"])
    target = expansion.get("target") or {}
    built_for = ", ".join([*target.get("scripts", []), *target.get("ranges", [])]) or "its target"
    entries = [("sources", n, s) for n, s in cfg.data.sources.items()]
    entries += [("validation", n, v) for n, v in cfg.data.validation.items()]
    for kind, name, entry in entries:
        lang = entry.lang or (name if kind == "validation" else None)  # a validation set is named by its language
        if SourceOptions.of(entry).format == "hub" or not needs_new_tokens(lang, non_target):
            continue
        if new_token_share(tokenizer, base, entry, cfg.paths.root) == 0:
            raise ConfigError(
                f"data.{kind}.{name} (lang {lang}) has no new tokens under tokenizer {cfg.tokenizer.path} "
                f"(built for {built_for}): build the tokenizer for this language with python tokenize.py "
                f"run_name={cfg.run_name} 'target.scripts=[...]' 'corpus.paths=[...]' and train with "
                f"run_name={cfg.run_name} (docs/second-language.md)"
            )
