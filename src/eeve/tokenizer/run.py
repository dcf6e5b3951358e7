"""`python tokenize.py`: read the config, build (or count), and write the expanded tokenizer folder atomically."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from tokenizers import Tokenizer

from eeve.config import TokenizeConfig, to_tokenize_config
from eeve.errors import TokenizerBuildError
from eeve.io import atomic_dir, atomic_write
from eeve.text.corpus import CorpusStats, iter_documents
from eeve.text.scripts import target_scripts
from eeve.text.sources import open_sources
from eeve.tokenizer.base import load_base, write_hf_folder
from eeve.tokenizer.build import Expansion, base_vocab_size, build_expanded_tokenizer
from eeve.tokenizer.counting import Counts, count_tokens
from eeve.tokenizer.report import compression_report, read_lines
from eeve.tokenizer.sentencepiece_model import write_sentencepiece_model


def _runtime_dirs() -> tuple[str, str]:
    """(the directory the user ran from, Hydra's run dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        rt = HydraConfig.get().runtime
        return rt.cwd, rt.output_dir
    except Exception:  # noqa: BLE001 - not under Hydra
        return os.getcwd(), os.getcwd()


def run_from_config(dcfg, prepare: Callable[[TokenizeConfig], None] | None = None) -> Path:
    """`python tokenize.py`: build (or count) and write the output folder atomically. Raises TokenizerBuildError /
    CorpusError with one-line messages on bad input. ``prepare`` may adjust the config first (tokenize.py:
    eeve.demo.paths.use_demo_data, which fetches the demo data its default paths name)."""
    cfg = to_tokenize_config(dcfg)
    cwd, run_dir = _runtime_dirs()
    if prepare is not None:
        prepare(cfg)
    cfg.progress = cfg.progress and sys.stderr.isatty()  # bars only for humans: logs and errors stay clean
    _check_settings(cfg)
    if cfg.mode == "count":
        return _run_count(cfg, cwd, run_dir)
    target_scripts(cfg.target.scripts, cfg.target.ranges)  # a misspelt script fails before any work
    base = load_base(_under(cwd, cfg.base_tokenizer))
    open_sources(cfg.corpus, cwd)  # bad paths fail before any work
    out = Path(cfg.output_dir if cfg.output_dir else os.path.join(run_dir, "tokenizer"))
    if not out.is_absolute():
        out = Path(cwd) / out
    print(f"base: {base.source} ({base.kind.name}, {base_vocab_size(base):,} tokens, {len(base.merges):,} merges)")
    with atomic_dir(out, setting="output_dir") as tmp:
        t0 = time.time()
        res = build_expanded_tokenizer(base, cfg, base_dir=cwd)
        exp: Expansion = res["expansion"]
        texts = {lang: read_lines(path, cwd) for lang, path in cfg.heldout.items()}
        comp = compression_report(base.tokenizer(), exp.tokenizer(), base.kind, texts, exp.script)
        write_hf_folder(exp.tokenizer_json(), base.config, tmp)
        sp_model = write_sentencepiece_model(base, exp.tokenizer_json(), tmp, texts)
        write_hf_folder(base.tokenizer_json, base.config, tmp / "base_tokenizer")
        report = _report(cfg, base, res, comp, sp_model, seconds=round(time.time() - t0, 1))
        (tmp / "expansion.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    _print_summary(out, report, comp, cfg.vocab_multiple_of)
    return out


def _check_settings(cfg: TokenizeConfig) -> None:
    if cfg.mode not in ("build", "count"):
        raise TokenizerBuildError(f"mode={cfg.mode!r} is unknown: use mode=build or mode=count")
    if (
        cfg.intermediate_vocab_size < 256
        or cfg.min_frequency < 1
        or cfg.max_iterations < 1
        or cfg.vocab_multiple_of < 0
    ):
        raise TokenizerBuildError(
            "need intermediate_vocab_size >= 256, min_frequency >= 1, max_iterations >= 1, vocab_multiple_of >= 0"
        )


def _under(cwd: str, path: str) -> str:
    """`path` as given when absolute (or ~), else relative to the directory the user ran from."""
    return path if os.path.isabs(os.path.expanduser(path)) else os.path.join(cwd, path)


def _report(cfg: TokenizeConfig, base, res: dict, comp: dict, sp_model: dict, seconds: float) -> dict:
    """The content of expansion.json."""
    exp: Expansion = res["expansion"]
    counts: Counts = res["counts"]
    stats: CorpusStats = res["stats"]
    return {
        "base_vocab_size": exp.base_size,
        "vocab_size": exp.base_size + len(exp.new_tokens),
        "base_kind": base.kind.name,
        "base_tokenizer": base.source,
        "target": {"scripts": list(cfg.target.scripts), "ranges": list(cfg.target.ranges)},
        "num_new_tokens": len(exp.new_tokens),
        # frequency = times the token occurs in the expanded tokenization of the corpus; single characters also
        # carry char_frequency (occurrences of the character, inside longer tokens included: the card's rule)
        "new_tokens": [
            {
                "id": exp.base_size + i,
                "token": t,
                "frequency": int(counts.tokens[exp.base_size + i]),
                **(
                    {"char_frequency": res["char_counts"].char_count(base.kind.token_text(t))}
                    if base.kind.is_single_char(t)
                    else {}
                ),
            }
            for i, t in enumerate(exp.new_tokens)
        ],
        "new_merges": len(exp.new_merges),
        "iterations": res["iterations"],
        "trimmed_for_multiple": res["trimmed"],
        "repairs": res["log"].get("repaired", 0),
        "unreachable_dropped": res["log"].get("unreachable_dropped", []),
        "intermediate_vocab_size": res["intermediate_vocab"],
        "candidates": res["candidates"],
        "corpus": {
            "files": stats.files,
            "documents": counts.documents,
            "characters": counts.characters,
            ("intermediate_sample_bytes" if cfg.intermediate_max_mb else "text_bytes"): stats.text_bytes,
            "invalid_utf8_lines": stats.invalid_utf8_lines,
        },
        "compression": comp,
        "normalizer": "NFC (the base has none: non-NFC input encodes as the base encodes its NFC form)",
        "sentencepiece_model": sp_model,  # tokenizer.model: written, or why not
        "config": asdict(cfg),
        "seconds": seconds,
    }


def _print_summary(out: Path, report: dict, comp: dict, mult: int) -> None:
    """The closing lines: the vocabulary size, each held-out language's compression, where it was written."""
    vs = report["vocab_size"]
    print(
        f"new tokens: {report['num_new_tokens']:,} -> vocab {vs:,}"
        + (f" (= {vs // mult} x {mult})" if mult > 1 and vs % mult == 0 else "")
    )
    for lang, row in comp.items():
        fb = (
            f", byte fallback {row.get('base_byte_fallback_rate', 0):.2%} -> {row.get('expanded_byte_fallback_rate', 0):.2%}"  # noqa: E501
            if "base_byte_fallback_rate" in row
            else ""
        )
        print(
            f"held-out {lang}: {row['base_chars_per_token']:.3f} -> {row['expanded_chars_per_token']:.3f} chars/token "
            f"(x{row['ratio']:.2f}){fb}, new tokens {row['new_token_share']:.0%}; lines without target characters "
            f"differing from base: {row['non_target_mismatches']}/{row['non_target_lines_checked']}"
        )
    sp = report["sentencepiece_model"]
    print(
        f"tokenizer.model: sentencepiece == tokenizer.json on {sp['checked_lines']:,} NFC lines"
        if sp["written"]
        else f"tokenizer.model: not written ({sp['reason']})"
    )
    print(f"wrote {out} ({report['seconds']}s)")


def _run_count(cfg: TokenizeConfig, cwd: str, run_dir: str) -> Path:
    """mode=count: token + character counts of one shard of the corpus files (sum with merge_counts)."""
    c = cfg.count
    if not c.tokenizer_dir:
        raise TokenizerBuildError("mode=count needs count.tokenizer_dir=PATH (an expanded tokenizer folder)")
    if not 0 <= c.shard_index < c.num_shards:
        raise TokenizerBuildError(f"count.shard_index={c.shard_index} must be in [0, count.num_shards={c.num_shards})")
    tdir = c.tokenizer_dir if os.path.isabs(c.tokenizer_dir) else os.path.join(cwd, c.tokenizer_dir)
    tok = (
        load_base(tdir).tokenizer()
        if not (Path(tdir) / "expansion.json").exists()
        else Tokenizer.from_file(str(Path(tdir) / "tokenizer.json"))
    )
    sources = open_sources(cfg.corpus, cwd)
    if c.num_shards > 1 and cfg.corpus.format == "hub":
        raise TokenizerBuildError(
            "mode=count shards the corpus by file, and a hub dataset id is one source: save it "
            "as local Parquet shards (Dataset.to_parquet) and give those paths"
        )
    files = sources[c.shard_index :: c.num_shards]
    out = Path(c.out) if c.out else Path(run_dir) / f"counts_{c.shard_index}of{c.num_shards}.npz"
    if not out.is_absolute():
        out = Path(cwd) / out
    docs = iter_documents(files, progress=cfg.progress)
    counts = count_tokens(tok, docs, batch_bytes=cfg.batch_bytes, count_chars=True)
    atomic_write(out, counts.save)
    print(
        f"shard {c.shard_index}/{c.num_shards}: {len(files)} files, {counts.documents:,} documents, "
        f"{int(counts.tokens.sum()):,} tokens -> {out}"
    )
    return out
