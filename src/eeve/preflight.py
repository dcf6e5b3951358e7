"""Checks a run makes before it spends anything: no model is loaded or evaluated until they pass.

``check_train(cfg, first_stage)`` (train.py, before the stage loop) and ``check_evaluate(cfg)`` (python -m
eeve.evaluate, before the base is scored) read only small files: every input path (``data.sources.*.paths``,
``data.validation.*.paths``), the model folders, the tokenizer's vocabulary against the model's (config.json or
``model.config``), that the output folders are writable, and that the evaluation tasks can be loaded. Each failure is
one line naming the key the user typed and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eeve.config import EvaluateConfig, ModelConfig, TrainConfig
from eeve.errors import ConfigError, EvalError
from eeve.eval.harness import check_tasks, require_lm_eval
from eeve.layout import resolve, stage_source
from eeve.model.expand import read_expansion
from eeve.model.load import check_model_path, looks_local
from eeve.text.sources import open_sources
from eeve.training.adapters import require_qlora


def check_paths(entries: dict, root: str | Path, prefix: str) -> None:
    """Every file or glob of ``{name: entry with .paths}`` exists (hub ids are not looked up); errors name
    ``<prefix>.<name>.paths``."""
    for name, entry in entries.items():
        open_sources(entry, root, key=f"{prefix}.{name}.paths")


def check_writable(folder: str | Path, key: str) -> None:
    """``folder`` exists (created if missing) and can be written to."""
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{key}: cannot create {p} ({e.strerror or type(e).__name__}): give a writable folder"
        ) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {p} is not writable: give a writable folder")


def folder_vocab(folder: str | Path) -> int | None:
    """``vocab_size`` of an HF model folder's config.json (None when it has none)."""
    f = Path(folder) / "config.json"
    if not f.is_file():
        return None
    conf = json.loads(f.read_text(encoding="utf-8"))
    return conf.get("vocab_size") or (conf.get("text_config") or {}).get("vocab_size")


def model_vocab(model: ModelConfig, root: str | Path) -> int | None:
    """The base model's embedding rows, from its config alone (None for a hub id: nothing is downloaded)."""
    if model.name_or_path:
        return folder_vocab(resolve(model.name_or_path, root)) if looks_local(model.name_or_path) else None
    return (model.config or {}).get("vocab_size")


def check_vocab(cfg: TrainConfig, first_stage: int) -> None:
    """The expanded tokenizer fits the base model (its base part) and the first stage's starting export (all of it)."""
    tok = resolve(cfg.tokenizer.path, cfg.paths.root)
    expansion = read_expansion(tok)
    rows = model_vocab(cfg.model, cfg.paths.root)
    if rows is not None and rows != expansion["base_vocab_size"]:
        raise ConfigError(
            f"vocabulary mismatch: tokenizer.path={cfg.tokenizer.path} was built on a base tokenizer of "
            f"{expansion['base_vocab_size']} tokens, but the model ({cfg.model.name_or_path or 'model.config'}) has "
            f"{rows}: build it from this model's tokenizer (python tokenize.py run_name={cfg.run_name} "
            "base_tokenizer=...) or fix tokenizer.path"
        )
    src = stage_source(cfg, first_stage, check=bool(cfg.init_from))
    rows = folder_vocab(src) if src is not None else None
    if rows is not None and rows != expansion["vocab_size"]:
        key = f"init_from={cfg.init_from}" if cfg.init_from else f"the export {src}"
        raise ConfigError(
            f"vocabulary mismatch: {key} has {rows} embedding rows but tokenizer.path={cfg.tokenizer.path} has "
            f"{expansion['vocab_size']} tokens: use the tokenizer that export was trained with"
        )


def check_eval_tasks(cfg: TrainConfig) -> None:
    """Harness tasks load (single process), or at least the harness is installed (several processes: benchmarks are
    skipped there, see eeve.eval.training_run)."""
    if not (cfg.eval.enabled and cfg.eval.tasks and cfg.eval.after_stages):
        return
    if cfg.trainer.strategy == "single" and cfg.trainer.num_nodes == 1:
        check_tasks(list(cfg.eval.tasks), cfg.eval.include_path)
    else:
        require_lm_eval()


def check_train(cfg: TrainConfig, first_stage: int) -> None:
    """Everything train.py can check before it loads a model (see the module docstring)."""
    root = cfg.paths.root
    if cfg.stage.adapter == "qlora":  # this machine cannot run the stage at all: say so first
        require_qlora()
    check_model_path(cfg.model.name_or_path)
    check_paths(cfg.data.sources, root, "data.sources")
    check_paths(cfg.data.validation, root, "data.validation")
    if cfg.recipe.expand:  # recipe=no_expansion writes its tokenizer from the model's own (eeve.training.recipe)
        check_vocab(cfg, first_stage)
    check_writable(cfg.paths.run_dir, "the output folder (hydra.run.dir, or run_name=NAME)")
    check_writable(resolve(cfg.paths.cache_dir, root), "paths.cache_dir")
    check_eval_tasks(cfg)


def check_model_folder(path: str, key: str) -> None:
    """``path`` is an HF model folder (holds config.json)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EvalError(f"{key}={path} does not exist: give an exported stage folder (outputs/<run>/stage<N>)")
    if not (p / "config.json").is_file():
        inside = sorted(q.name for q in p.iterdir())[:4] if p.is_dir() else []
        seen = f" (it holds {', '.join(inside)})" if inside else ""
        raise EvalError(
            f"{key}={path} holds no model (no config.json){seen}: give an exported stage folder "
            "(outputs/<run>/stage<N>)"
        )


def check_evaluate(cfg: EvaluateConfig, models: list[str]) -> None:
    """Everything python -m eeve.evaluate can check before it scores the base (see the module docstring)."""
    for path in models:
        check_model_folder(path, "model")
    if cfg.base and looks_local(cfg.base):
        check_model_folder(cfg.base, "base")
    if cfg.base_tokenizer and not Path(cfg.base_tokenizer).expanduser().exists():
        raise EvalError(f"base_tokenizer={cfg.base_tokenizer} does not exist: give the base's tokenizer folder")
    check_paths(cfg.validation, os.getcwd(), "validation")
    if cfg.output:
        check_writable(Path(cfg.output).expanduser().resolve().parent, f"output={cfg.output}")
    if cfg.eval.tasks:
        check_tasks(list(cfg.eval.tasks), cfg.eval.include_path)
