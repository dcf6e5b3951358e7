"""Runs side by side: their stages' metrics.json read back, and one markdown table of them (``python -m eeve.compare``).

A run is a folder holding ``stage<N>/metrics.json`` (``outputs/<run>/``; ``stage0`` is the base model on the same
held-out bytes). Per run and stage: bits per byte per validation language on the same bytes as the base
(``eval.bpb``, written by eeve.eval.stage_eval), or — when evaluation was off — the training run's own validation
(``val_end``, marked ``*``: not the same bytes, not comparable across tokenizers); the change against the run's base;
training FLOPs, tokens and text bytes, each cumulative over the run's stages in order; characters per token per
language. The recipe is ``metrics["recipe"]`` (absent: ``eeve``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from eeve.errors import EvalError
from eeve.layout import flops_spent, number_of

_STAGE_DIR = re.compile(r"^stage(\d+)$")


@dataclass
class Point:
    """One stage's end, with the run's totals up to it."""

    stage: int
    trainable: list[str]
    bpb: dict[str, float]
    same_bytes: bool
    chars_per_token: dict[str, float]
    flops: float | None
    tokens: int
    text_bytes: int | None
    series: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    """(cumulative FLOPs, same-bytes BPB) of validations inside the stage."""


@dataclass
class Run:
    name: str
    folder: Path
    recipe: str
    base: dict | None
    points: list[Point]


def is_run(folder: Path) -> bool:
    return any((d / "metrics.json").is_file() for d in folder.glob("stage*") if _STAGE_DIR.match(d.name))


def find_runs(folder: Path) -> list[Path]:
    """``folder`` itself when it is a run; else its run subfolders (a Hydra multirun sweep's numbered jobs, in job
    order), also under ``folder/multirun``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"{folder} is not a folder: give a run folder (outputs/<run>) or a multirun sweep folder")
    if is_run(folder):
        return [folder]
    jobs = sorted((d for d in folder.iterdir() if d.is_dir() and is_run(d)), key=_job_key)
    if not jobs and (folder / "multirun").is_dir():
        return find_runs(folder / "multirun")
    if not jobs:
        raise EvalError(f"{folder} holds no stage<N>/metrics.json, nor job folders that do: train a stage there first")
    return jobs


def _job_key(d: Path) -> tuple[int, str]:
    m = re.match(r"^(\d+)", d.name)
    return (int(m.group(1)) if m else 1 << 30, d.name)


def stage_order(folder: Path) -> list[int]:
    """Stage numbers in the run's schedule (``stages:`` of its ``.hydra/config.yaml``), [] when unknown."""
    try:
        conf = OmegaConf.load(folder / ".hydra" / "config.yaml")
        numbers = dict(conf.get("stage_numbers") or {})
        return [number_of(str(n), numbers) for n in conf.get("stages") or []]
    except (OSError, ValueError, OmegaConfBaseException):
        return []


def load_run(folder: Path, name: str) -> Run:
    """The run's base (stage 0, may be None) and its stages in schedule order (else by number), with totals."""
    stages = []
    for d in folder.glob("stage*"):
        m = _STAGE_DIR.match(d.name)
        if m and int(m.group(1)) > 0 and (d / "metrics.json").is_file():
            stages.append(json.loads((d / "metrics.json").read_text(encoding="utf-8")))
    order = stage_order(folder)
    stages.sort(key=lambda m: (order.index(m["stage"]) if m["stage"] in order else len(order), m["stage"]))
    base_file = folder / "stage0" / "metrics.json"
    base = json.loads(base_file.read_text(encoding="utf-8")) if base_file.is_file() else None
    recipe = next((m["recipe"] for m in stages if m.get("recipe")), "eeve")
    return Run(name, folder, recipe, base, points(stages))


def points(stages: list[dict]) -> list[Point]:
    out, flops, tokens, nbytes = [], 0.0, 0, 0
    for m in stages:
        spent, init = flops_spent(m), float((m.get("flops") or {}).get("init") or 0)
        before = None if flops is None else flops + init  # a stage's steps start after its init
        flops = None if flops is None or spent is None else flops + spent
        tokens += int(m.get("tokens", 0))
        nbytes = None if nbytes is None or m.get("text_bytes") is None else nbytes + int(m["text_bytes"])
        ev = (m.get("eval") or {}).get("bpb")
        bpb = {k: r["bpb"] for k, r in (ev or m.get("val_end") or {}).items()}
        cpt = {k: r["chars_per_token"] for k, r in (ev or {}).items() if r.get("chars_per_token")}
        out.append(Point(m["stage"], list(m.get("trainable", [])), bpb, ev is not None, cpt, flops, tokens, nbytes))
        per_step = (m.get("flops") or {}).get("per_token", 0) * m.get("tokens", 0) / max(m.get("steps", 0), 1)
        if before is not None and per_step:
            series = [p for p in (m.get("eval") or {}).get("series", []) if p.get("step")]
            out[-1].series = [(before + p["step"] * per_step, p["bpb"]) for p in series]
    return out


def languages(runs: list[Run]) -> list[str]:
    """Validation languages in first-seen order (the base's, then the stages')."""
    out: list[str] = []
    for r in runs:
        for lang in list((r.base or {}).get("eval", {}).get("bpb", {})) + [k for p in r.points for k in p.bpb]:
            if lang not in out:
                out.append(lang)
    return out


def base_bpb(run: Run) -> dict[str, float]:
    return {k: v["bpb"] for k, v in ((run.base or {}).get("eval", {}).get("bpb") or {}).items()}


def _num(x: float | int | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def comparison_table(runs: list[Run]) -> str:
    """The markdown table (see the module docstring): a base row per distinct base evaluation, then each run's
    stages; a note under it when some value is not on the same bytes."""
    langs = languages(runs)
    head = ["run", "recipe", "stage", "trained"]
    head += [f"{lang} BPB (vs base)" for lang in langs]
    head += ["FLOPs (cum.)", "tokens (cum.)", "text bytes (cum.)"] + [f"{lang} chars/token" for lang in langs]
    rows = _base_rows(runs, langs) + [_stage_row(r, p, langs) for r in runs for p in r.points]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in rows]
    if any(not p.same_bytes and p.bpb for r in runs for p in r.points):
        lines += [
            "",
            "\\* evaluation was off: the training run's own validation (val_end), not the same bytes as the base",
        ]
    return "\n".join(lines)


def _base_rows(runs: list[Run], langs: list[str]) -> list[list[str]]:
    rows, seen = [], set()
    shared = len({(r.base or {}).get("eval", {}).get("key") for r in runs}) == 1
    for r in runs:
        key = (r.base or {}).get("eval", {}).get("key")
        if key and key not in seen:
            seen.add(key)
            ev = r.base["eval"]["bpb"]
            cells = ["base" if shared else f"base ({r.name})", "", "0", "base model, base tokenizer"]
            cells += [_num(ev[k]["bpb"], ".4f") if k in ev else "–" for k in langs]
            cells += ["0", "0", "0"] + [_num(ev.get(k, {}).get("chars_per_token"), ".3f") for k in langs]
            rows.append(cells)
    return rows


def _stage_row(run: Run, p: Point, langs: list[str]) -> list[str]:
    ref = base_bpb(run)
    cells = [run.name, run.recipe, str(p.stage), "+".join(p.trainable)]
    for lang in langs:
        v = p.bpb.get(lang)
        if v is None:
            cells.append("–")
        elif not p.same_bytes:
            cells.append(f"{v:.4f}*")
        else:
            cells.append(f"{v:.4f}" + (f" ({100 * (v / ref[lang] - 1):+.1f} %)" if ref.get(lang) else ""))
    cells += [_num(p.flops, ".3g"), f"{p.tokens:,}", _num(p.text_bytes, ",")]
    return cells + [_num(p.chars_per_token.get(lang), ".3f") for lang in langs]
