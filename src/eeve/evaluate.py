"""Evaluate HF model folders against a base model on the same held-out bytes, without training.

    python -m eeve.evaluate model=outputs/demo/stage7 base=.cache/demo/tiny_base
    python -m eeve.evaluate model='[outputs/demo/stage1,outputs/demo/stage7]' base=/models/SOLAR-10.7B-v1.0 \\
        validation.ko.paths='[/data/ko_heldout.txt]' validation.en.paths='[/data/en_heldout.txt]' \\
        eval.bytes=1000000 eval.tasks='[kobest_boolq,kobest_copa,haerae,kmmlu,arc_easy,hellaswag,mmlu]'

Prints the same table as training (eeve.eval.table): the base row, then one row per model with bits per byte
per language and the change against the base, characters per token, byte-fallback share, and one column per
benchmark. Each model is scored with its own tokenizer (the folder's tokenizer.json; ``base_tokenizer=DIR`` when
the base folder has none). Keys (key=value, checked against eeve.config.EvaluateConfig): model, base,
base_tokenizer, validation.<lang>.paths, eval.bytes, eval.window, eval.batch_tokens, eval.device, eval.tasks,
eval.task_limit, eval.include_path, eval.batch_size, eval.samples.*, dtype, trust_remote_code, output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from eeve.cli import fail
from eeve.config import EvaluateConfig, to_object
from eeve.errors import ConfigError, EEVEError
from eeve.eval.table import eval_table
from eeve.eval.texts import heldout_texts


def main(argv: list[str] | None = None) -> dict:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return {}
    try:
        bad = [a for a in args if "=" not in a]
        if bad:
            raise ConfigError(f"argument {bad[0]!r} is not key=value: e.g. model=outputs/demo/stage7 base=DIR")
        cfg = to_object(EvaluateConfig, OmegaConf.from_dotlist(args))
        return run(cfg)
    except (EEVEError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def run(cfg) -> dict:
    # torch and transformers load here, once the arguments are checked: --help and a bad key answer at once
    from eeve.eval.stage_eval import evaluate_model, load_folder, pick_device, read_metrics, write_json_atomic
    from eeve.preflight import check_evaluate

    models = [cfg.model] if isinstance(cfg.model, str) else [str(m) for m in (cfg.model or [])]
    if not models and not cfg.base:
        raise ConfigError("nothing to evaluate: give model=PATH (one folder or a list) and base=PATH")
    check_evaluate(cfg, models)  # every folder, path and task before any model is scored
    texts = heldout_texts(cfg.validation, cfg.eval.bytes, os.getcwd())
    device = pick_device(cfg.eval.device)

    def one(path: str, tokenizer: str) -> dict:
        print(f"evaluating {path} on {device} ...", file=sys.stderr)
        model = load_folder(path, cfg.dtype, device, cfg.trust_remote_code)
        return evaluate_model(model, tokenizer, texts, cfg.eval, benchmarks=True)

    base = None
    if cfg.base:
        base = {"stage": "0 (base)", "model": cfg.base, "eval": one(cfg.base, cfg.base_tokenizer or cfg.base)}
    rows = []
    for path in models:
        meta = read_metrics(Path(path)) or {}
        row = {
            "stage": Path(path).name,
            "model": path,
            "eval": one(path, path),
            "trainable": meta.get("trainable", []),
            "tokens": meta.get("tokens"),
        }
        if "groups_changed" in meta:
            row["groups_changed"] = meta["groups_changed"]
        rows.append(row)
    table = eval_table(rows, base)
    print(table)
    _update_cards(cfg, models, table)
    result = {"base": base, "models": rows}
    if cfg.output:
        write_json_atomic(Path(cfg.output), result)
        print(f"written: {cfg.output}", file=sys.stderr)
    return result


def _update_cards(cfg, models: list[str], table: str) -> None:
    """Add the table to each model folder's eeve model card (README.md), when it has one."""
    from eeve.card import update_card_evaluation  # torch (eeve.eval.stage_eval): see run()

    command = f"python -m eeve.evaluate model={','.join(models)}" + (f" base={cfg.base}" if cfg.base else "")
    if cfg.eval.tasks:
        command += f" eval.tasks=[{','.join(cfg.eval.tasks)}]"
    for path in models:
        if update_card_evaluation(path, table, command):
            print(f"model card updated: {Path(path) / 'README.md'}", file=sys.stderr)


if __name__ == "__main__":
    from eeve.console import plain_stderr

    plain_stderr()  # the harness's and transformers' bars stay off logs
    main()
