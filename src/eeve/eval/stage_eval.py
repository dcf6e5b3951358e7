"""Evaluating the models of a run: the base once (stage 0, cached) and each stage's export, on the same bytes.

``evaluate_model`` is the one evaluation (bits per byte etc., samples, optional benchmarks) used for the base,
for stage exports and by ``python -m eeve.evaluate``. In a training run:

  - ``base_metrics(cfg)``: the base model with the *base* tokenizer (``<tokenizer.path>/base_tokenizer``),
    written to ``<run_dir>/stage0/metrics.json`` and reused while its ``eval.key`` matches (the held-out text, the
    eval settings and the base model);
  - ``stage_metrics(cfg, number, out, metrics)``: the stage's export as saved (loaded back from ``out``), merged into
    its ``metrics.json`` under ``eval``; a finished stage whose ``eval`` is missing or stale is evaluated again
    when the run passes by it (nothing else is retrained).
Both run on global rank 0 only; the other ranks do not wait for them.
"""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

import torch

from eeve.config import EvalConfig
from eeve.errors import EvalError
from eeve.eval.bpb import evaluate_bpb
from eeve.eval.harness import run_tasks
from eeve.eval.samples import greedy_samples
from eeve.eval.texts import heldout_texts
from eeve.io import atomic_dir, atomic_write
from eeve.layout import resolve, stage_dir
from eeve.model.expand import check_base_vocab, read_expansion
from eeve.model.export import _json_default
from eeve.model.load import load_base_model, torch_dtype

METRICS = "metrics.json"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EvalError(f"eval.device={name!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None


def run_prompts(ecfg: EvalConfig, texts: dict[str, list[str]]) -> dict[str, list[str]]:
    """The sample prompts of the languages evaluated (a Japanese run writes no Korean samples)."""
    return {lang: list(p) for lang, p in ecfg.samples.prompts.items() if lang in texts}


def eval_key(ecfg: EvalConfig, texts: dict[str, list[str]], *extra: str) -> str:
    """Changes when the evaluated bytes, the evaluation settings or ``extra`` (e.g. the base model) change."""
    h = hashlib.sha256()
    for lang, docs in texts.items():
        h.update(lang.encode() + b"\0")
        for d in docs:
            h.update(d.encode("utf-8") + b"\n")
    settings = {
        "window": ecfg.window,
        "tasks": list(ecfg.tasks),
        "limit": ecfg.task_limit,
        "include": ecfg.include_path,
        "prompts": run_prompts(ecfg, texts),
        "max_new_tokens": ecfg.samples.max_new_tokens,
        "extra": list(extra),
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def evaluate_model(
    model, tokenizer_dir: str | Path, texts: dict[str, list[str]], ecfg: EvalConfig, *, benchmarks: bool
) -> dict:
    """{bpb: {lang: ...}, samples: {lang: [...]}, benchmarks: {task: {metric: v}} (when asked and configured)}."""
    out = {
        "bpb": evaluate_bpb(model, tokenizer_dir, texts, ecfg.window, ecfg.batch_tokens),
        "samples": greedy_samples(model, tokenizer_dir, run_prompts(ecfg, texts), ecfg.samples.max_new_tokens),
    }
    if benchmarks and ecfg.tasks:
        out["benchmarks"] = run_tasks(
            model,
            tokenizer_dir,
            list(ecfg.tasks),
            limit=ecfg.task_limit,
            batch_size=ecfg.batch_size,
            include_path=ecfg.include_path,
        )
    return out


def load_folder(
    folder: str | Path, dtype: str = "float32", device: torch.device | str = "cpu", trust_remote_code: bool = False
):
    """A HF causal LM folder, in eval mode on ``device``; one-line error if it is not one."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise EvalError(f"{folder} holds no HF model (config.json missing): give an exported stage or model folder")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    return model.to(device).eval()


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace ``path`` by ``data`` in one rename (a reader sees the old file or the new one)."""
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _free(model) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- in a training run
def run_texts(cfg) -> dict[str, list[str]]:
    return heldout_texts(cfg.data.validation, cfg.eval.bytes, cfg.paths.root)


def base_tokenizer_dir(cfg) -> Path:
    return resolve(cfg.tokenizer.path, cfg.paths.root) / "base_tokenizer"


def base_key(cfg, texts) -> str:
    base_json = (base_tokenizer_dir(cfg) / "tokenizer.json").read_bytes()
    model = cfg.model.name_or_path or json.dumps(dict(cfg.model.config), sort_keys=True)
    return eval_key(
        cfg.eval,
        texts,
        "base",
        model,
        cfg.model.dtype,
        hashlib.sha256(base_json).hexdigest(),
        str(0 in cfg.eval.after_stages),
    )


def read_metrics(folder: Path) -> dict | None:
    p = Path(folder) / METRICS
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def base_metrics(cfg, texts: dict[str, list[str]] | None = None) -> dict | None:
    """Stage 0 = the base model with the base tokenizer, evaluated once per run (see module docstring)."""
    if not cfg.eval.enabled:
        return None
    texts = texts if texts is not None else run_texts(cfg)
    key = base_key(cfg, texts)
    folder = stage_dir(cfg, 0)
    cached = read_metrics(folder)
    if cached and cached.get("eval", {}).get("key") == key:
        return cached
    device = pick_device(cfg.eval.device)
    print(
        f"stage 0: evaluating the base model with its own tokenizer on {sum(map(len, texts.values()))} held-out "
        f"documents ({', '.join(f'{k} {sum(len(d.encode()) for d in v):,} bytes' for k, v in texts.items())})"
    )
    model = load_base_model(cfg.model)
    check_base_vocab(model, read_expansion(base_tokenizer_dir(cfg).parent)["base_vocab_size"])
    model = model.to(device).eval()
    ev = evaluate_model(model, base_tokenizer_dir(cfg), texts, cfg.eval, benchmarks=0 in cfg.eval.after_stages)
    _free(model)
    metrics = {
        "stage": 0,
        "trainable": [],
        "steps": 0,
        "tokens": 0,
        "groups_changed": [],
        "model": cfg.model.name_or_path or "model.config (random init)",
        "tokenizer": str(base_tokenizer_dir(cfg)),
        "eval": {**ev, "key": key},
    }
    with atomic_dir(folder, setting="paths.run_dir") as tmp:
        write_json_atomic(tmp / METRICS, metrics)
    return metrics


def stage_key(cfg, texts, number: int) -> str:
    return eval_key(cfg.eval, texts, "stage", str(number in cfg.eval.after_stages))


def stage_metrics(
    cfg,
    number: int,
    out: Path,
    metrics: dict,
    texts: dict[str, list[str]] | None = None,
    series: list[dict] | None = None,
) -> dict:
    """Evaluate stage ``number``'s export in ``out`` (unless its metrics already hold a current evaluation) and
    write the result into its metrics.json under ``eval``; returns the updated metrics."""
    if not cfg.eval.enabled:
        return metrics
    texts = texts if texts is not None else run_texts(cfg)
    key = stage_key(cfg, texts, number)
    if metrics.get("eval", {}).get("key") == key:
        return metrics
    device = pick_device(cfg.eval.device)
    print(f"stage {number}: evaluating the export {out}")
    model = load_folder(out, cfg.model.dtype, device, cfg.model.trust_remote_code)
    ev = evaluate_model(model, out, texts, cfg.eval, benchmarks=number in cfg.eval.after_stages)
    _free(model)
    old_series = metrics.get("eval", {}).get("series", [])
    metrics = {**metrics, "eval": {**ev, "key": key, "series": series if series is not None else old_series}}
    write_json_atomic(Path(out) / METRICS, metrics)
    return metrics
