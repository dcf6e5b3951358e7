"""The demo's default paths in a tokenize config: ``.cache/demo/...`` stands for the demo data folder, fetched
and built on first use (``python tokenize.py`` hands :func:`use_demo_data` to eeve.tokenizer.run)."""

from __future__ import annotations

from eeve.config import TokenizeConfig
from eeve.demo.data import DEFAULT_LANG, LANGUAGES, ensure_demo_data

DEMO_PREFIX = ".cache/demo/"


def use_demo_data(cfg: TokenizeConfig) -> None:
    """Paths under .cache/demo/ (the defaults) point at `ensure_demo_data()` (fetched on first use; honours
    $EEVE_CACHE); a path under .cache/demo/<lang>/ fetches that demo language too."""
    paths = [str(p) for p in [cfg.base_tokenizer, *cfg.corpus.paths, *cfg.heldout.values()] if p]
    if not any(p.startswith(DEMO_PREFIX) for p in paths):
        return
    demo = str(ensure_demo_data()) + "/"
    for code in {p[len(DEMO_PREFIX) :].split("/", 1)[0] for p in paths if p.startswith(DEMO_PREFIX)} & set(LANGUAGES):
        if code != DEFAULT_LANG:
            ensure_demo_data(lang=code)
    fix = lambda p: demo + p[len(DEMO_PREFIX) :] if p and p.startswith(DEMO_PREFIX) else p  # noqa: E731
    cfg.base_tokenizer = fix(cfg.base_tokenizer)
    cfg.corpus.paths = [fix(p) for p in cfg.corpus.paths]
    cfg.heldout = {lang: fix(p) for lang, p in cfg.heldout.items()}
