"""The model card (`README.md`) of a stage export, built with huggingface_hub's ``ModelCard`` from the run's files.

Metadata: ``base_model`` (when ``model.name_or_path`` is a hub id), ``language`` (the data's ``lang`` values that
are ISO 639 codes), ``license`` (the base folder's own card's, when it has one), ``tags``, ``library_name``,
``datasets`` (``format: hub`` sources). Body: the vocabulary expansion (the tokenizer folder's expansion.json), the
data mixture, each stage so far (trained groups, steps, tokens, FLOPs when metrics.json has ``flops``), the
evaluation table against the base on the same bytes (:func:`eeve.eval.table.eval_table`, benchmarks included), and
the commands that reproduce it (Hydra's ``<run_dir>/.hydra/overrides.yaml``). ``python -m eeve.evaluate`` adds its
table to an existing card (:func:`update_card_evaluation`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from eeve.eval.stage_eval import read_metrics
from eeve.eval.table import eval_table
from eeve.layout import flops_spent, resolve, stage_dir, stage_order
from eeve.model.load import looks_local

README = "README.md"
EVALUATE_START, EVALUATE_END = "<!-- eeve:evaluate -->", "<!-- /eeve:evaluate -->"
_ISO = re.compile(r"^[a-z]{2,3}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it reads as a hub id and is no local folder."""
    if not name_or_path or looks_local(name_or_path) or Path(name_or_path).exists():
        return None
    return name_or_path if _HUB_ID.match(name_or_path) else None


def base_license(name_or_path: str | None) -> str | None:
    """The license in a local base folder's own README.md (nothing is downloaded)."""
    readme = Path(os.path.expanduser(name_or_path)) / README if name_or_path else None
    if readme is None or not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # noqa: BLE001 - a base README without (valid) metadata
        return None


def card_data(cfg) -> ModelCardData:
    langs = [s.lang for s in cfg.data.sources.values()] + [
        getattr(v, "lang", None) for v in cfg.data.validation.values()
    ]
    hub_sets = [p for s in cfg.data.sources.values() if s.format == "hub" for p in s.paths]
    return ModelCardData(
        base_model=hub_id(cfg.model.name_or_path),
        language=sorted({x for x in langs if x and _ISO.match(x)}) or None,
        license=base_license(cfg.model.name_or_path),
        tags=["eeve", "vocabulary-expansion", "text-generation"],
        library_name="transformers",
        pipeline_tag="text-generation",
        datasets=sorted(set(hub_sets)) or None,
    )


def expansion_section(exp: dict) -> str:
    c, sp = exp.get("config", {}), exp.get("sentencepiece_model") or {}
    lines = [
        "## Vocabulary expansion",
        "",
        f"{exp['base_vocab_size']:,} base tokens ({exp['base_kind']}) + {exp['num_new_tokens']:,} new tokens = "
        f"{exp['vocab_size']:,}; target scripts {', '.join(exp['target']['scripts'] + exp['target']['ranges'])}; "
        f"examples: {', '.join(t['token'] for t in exp['new_tokens'][:8])}.",
        "",
        "| held-out | chars/token (base) | chars/token (expanded) | ratio |",
        "|---|---|---|---|",
    ]
    for lang, row in exp.get("compression", {}).items():
        lines.append(
            f"| {lang} | {row['base_chars_per_token']:.3f} | {row['expanded_chars_per_token']:.3f} "
            f"| ×{row['ratio']:.2f} |"
        )
    keys = ("intermediate_vocab_size", "min_frequency", "max_iterations", "vocab_multiple_of", "intermediate_max_mb")
    corpus = exp.get("corpus", {})
    lines += [
        "",
        "Tokenizer build: "
        + ", ".join(f"`{k}={c[k]}`" for k in keys if c.get(k) is not None)
        + f"; corpus {len(corpus.get('files') or [])} "
        f"files, {corpus.get('documents', 0):,} documents, {corpus.get('characters', 0):,} characters.",
        "",
        "`tokenizer.model` (SentencePiece; feed it NFC text): "
        + ("included, checked against tokenizer.json." if sp.get("written") else f"none ({sp.get('reason', 'n/a')}).")
        if sp
        else "`tokenizer.model`: none.",
    ]
    return "\n".join(lines)


def data_section(cfg) -> str:
    lines = ["## Training data", "", "| source | ratio | lang | data |", "|---|---|---|---|"]
    total = sum(s.ratio for s in cfg.data.sources.values()) or 1.0
    for name, s in cfg.data.sources.items():
        where = ", ".join(f"`{p}`" for p in s.paths) + (" (hub)" if s.format == "hub" else "")
        lines.append(f"| {name} | {s.ratio / total:.2%} | {s.lang or ''} | {where} |")
    val = ", ".join(f"{k} ({', '.join(v.paths)})" for k, v in cfg.data.validation.items())
    lines += ["", f"Held-out (validation and evaluation): {val}."]
    return "\n".join(lines)


def _flops(m: dict) -> str:
    f = flops_spent(m) if isinstance(m.get("flops"), dict) else m.get("flops")
    return f"{f:.3g}" if isinstance(f, (int, float)) else ""


def stages_section(stages: list[dict]) -> str:
    lines = [
        "## Training stages",
        "",
        "| stage | trained groups | steps | tokens | FLOPs | lr |",
        "|---|---|---|---|---|---|",
    ]
    for m in stages:
        lr = (m.get("stage_config") or {}).get("lr", "")
        lines.append(
            f"| {m['stage']} | {', '.join(m.get('trainable', []))} | {m.get('steps', '')} | {m.get('tokens', 0):,} | "
            f"{_flops(m)} | {lr} |"
        )
    return "\n".join(lines)


def reproduce_section(cfg, tok_dir: Path) -> str:
    def overrides(folder: Path) -> str | None:
        p = folder / ".hydra" / "overrides.yaml"
        if not p.is_file():
            return None
        return " ".join(shlex.quote(str(o)) for o in yaml.safe_load(p.read_text(encoding="utf-8")) or [])

    tok = overrides(tok_dir.parent)
    train = overrides(Path(cfg.paths.run_dir))
    lines = ["## Reproduce", "", "```bash"]
    lines.append(f"python tokenize.py {tok}".rstrip() if tok is not None else f"# tokenizer: {tok_dir}")
    lines.append(f"python train.py {train}".rstrip() if train is not None else "python train.py  # overrides unknown")
    lines += ["```"]
    return "\n".join(lines)


def evaluation_section(stages: list[dict], base: dict | None) -> str:
    table = eval_table(stages, base)
    return "\n".join(
        [
            "## Evaluation",
            "",
            "Bits per byte on the same held-out bytes for the base (its own tokenizer) and each stage "
            "(lower is better), characters per token, byte-fallback share, and benchmarks where run.",
            "",
            table or "Not evaluated (eval.enabled=false).",
            "",
            EVALUATE_START,
            EVALUATE_END,
        ]
    )


def build_card(cfg, number: int) -> ModelCard:
    """The card of stage ``number``'s export, from the run's files (metrics.json of stages 0..number)."""
    tok_dir = resolve(cfg.tokenizer.path, cfg.paths.root)
    exp = json.loads((tok_dir / "expansion.json").read_text(encoding="utf-8"))
    numbers = stage_order(cfg)
    order = numbers[: numbers.index(number) + 1] if number in numbers else [number]
    stages = [m for m in (read_metrics(stage_dir(cfg, n)) for n in order) if m]
    base = read_metrics(stage_dir(cfg, 0))
    origin = cfg.model.name_or_path or "A randomly initialised Llama (model.config)"
    intro = (
        f"# {cfg.run_name}: stage {number}\n\n{origin} with its vocabulary expanded for "
        f"{', '.join(exp['target']['scripts'] + exp['target']['ranges'])} text by EEVE (Kim, Choi, Jeong 2024, "
        f"arXiv:2402.14714), trained in stages, exported after stage {number}. Built with the `eeve` code base."
    )
    body = "\n\n".join(
        [
            intro,
            expansion_section(exp),
            data_section(cfg),
            stages_section(stages),
            evaluation_section(stages, base),
            reproduce_section(cfg, tok_dir),
        ]
    )
    return ModelCard(f"---\n{card_data(cfg).to_yaml()}\n---\n\n{body}\n")


def _save(card: ModelCard, folder: Path) -> Path:
    path = Path(folder) / README
    tmp = path.with_name(f".{README}.tmp-{os.getpid()}")
    tmp.write_text(str(card), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_stage_card(cfg, number: int) -> Path | None:
    """Write ``README.md`` into stage ``number``'s export (global rank 0); a failure warns and keeps the export."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return None
    try:
        return _save(build_card(cfg, number), stage_dir(cfg, number))
    except Exception as e:  # noqa: BLE001 - the export is complete; a card problem must not lose the run
        print(f"warning: model card for stage {number} not written ({type(e).__name__}: {e})")
        return None


def update_card_evaluation(folder: str | Path, table: str, command: str) -> Path | None:
    """Put ``python -m eeve.evaluate``'s ``table`` into the card in ``folder`` (between the evaluate markers,
    replacing an earlier one); None when the folder has no eeve card."""
    path = Path(folder) / README
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if EVALUATE_START not in text or EVALUATE_END not in text:
        return None
    head, rest = text.split(EVALUATE_START, 1)
    _, tail = rest.split(EVALUATE_END, 1)
    block = f"{EVALUATE_START}\n### `python -m eeve.evaluate`\n\n```bash\n{command}\n```\n\n{table}\n{EVALUATE_END}"
    card = ModelCard(head + block + tail)
    return _save(card, folder)
