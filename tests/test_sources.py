"""Hugging Face `datasets` sources (Parquet, Arrow, JSON, load_dataset ids) read exactly like the .txt they were
written from: the same documents, token counts, packed tokens, tokenizer and training batches. Real demo data,
real `datasets` files, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from eeve.data.packing import open_packed, pack_source
from eeve.errors import CorpusError
from eeve.text.corpus import CorpusStats, iter_documents
from eeve.text.sources import SourceOptions, open_sources
from eeve.tokenizer.info import TokenizerInfo

ROOT = Path(__file__).resolve().parents[1]
N_LINES = 4000  # of the demo's Korean training text: enough for thousands of packed tokens, fast to tokenize


@pytest.fixture(scope="module")
def shards(demo_data, tmp_path_factory) -> dict:
    """The first N_LINES lines of the demo's Korean text as .txt, as two Parquet shards, as a save_to_disk folder,
    as two raw .arrow shards, as a .json file, and as a local `load_dataset` repository with a named config."""
    import datasets

    datasets.disable_progress_bars()
    d = tmp_path_factory.mktemp("shards")
    lines = (demo_data / "ko" / "train.txt").read_text(encoding="utf-8").split("\n")[:N_LINES]
    # blank and whitespace-only documents are skipped, decomposed Hangul is NFC-normalised, by every reader
    lines[10:10], lines[20:20] = ["", "   "], [unicodedata.normalize("NFD", lines[20])]
    txt = d / "ko.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # One row per line, blank ones included (a reader must skip them as the .txt reader does), plus a metadata
    # column and the text under another name, as web corpora have.
    half = len(lines) // 2
    parts = [lines[:half], lines[half:]]
    for i, part in enumerate(parts):
        ds = datasets.Dataset.from_dict({"content": part, "url": [f"u{i}-{j}" for j in range(len(part))]})
        ds.to_parquet(str(d / f"ko-{i:05d}.parquet"))
        ds.save_to_disk(str(d / f"saved{i}"))
    arrow = d / "arrow"
    arrow.mkdir()
    for i in range(2):
        (arrow / f"ko-{i}.arrow").write_bytes(next((d / f"saved{i}").glob("*.arrow")).read_bytes())
    with open(d / "ko.json", "w", encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps({"content": x}, ensure_ascii=False) + "\n")
    repo = d / "repo"  # a dataset repository as load_dataset reads it: README configs name the splits
    (repo / "ko").mkdir(parents=True)
    datasets.Dataset.from_dict({"content": lines}).to_parquet(str(repo / "ko" / "train.parquet"))
    datasets.Dataset.from_dict({"content": ["다른 설정"] * 5}).to_parquet(str(repo / "ko" / "other.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: ko\n  data_files:\n  - split: train\n    path: ko/train.parquet\n"
        "  - split: other\n    path: ko/other.parquet\n---\n",
        encoding="utf-8",
    )
    return {"dir": d, "txt": txt, "lines": lines}


def docs_of(paths, **opts) -> tuple[list[str], CorpusStats]:
    stats = CorpusStats()
    return list(iter_documents(paths, stats=stats, options=SourceOptions(**opts))), stats


@pytest.mark.parametrize("kind", ["parquet", "save_to_disk", "arrow", "json", "hub"])
def test_documents_identical_to_txt(shards, kind):
    d = shards["dir"]
    ref, ref_stats = docs_of([shards["txt"]])
    paths, opts = {
        "parquet": ([str(d / "ko-*.parquet")], {}),
        "save_to_disk": ([d / "saved0", d / "saved1"], {}),
        "arrow": ([str(d / "arrow" / "*.arrow")], {}),
        "json": ([d / "ko.json"], {}),
        "hub": ([str(d / "repo")], {"format": "hub", "name": "ko", "split": "train"}),
    }[kind]
    got, stats = docs_of(paths, text_field="content", **opts)
    assert got == ref
    assert (stats.documents, stats.text_bytes) == (ref_stats.documents, ref_stats.text_bytes)
    assert ref_stats.documents < len(shards["lines"])  # blank lines exist, and both sides skipped them


def test_hub_split_and_name_select_data(shards):
    got, _ = docs_of([str(shards["dir"] / "repo")], text_field="content", format="hub", name="ko", split="other")
    assert got == ["다른 설정"] * 5


def test_every_reader_takes_the_whole_source(shards, tmp_path):
    """The init sample, the held-out texts of the evaluation and the tokenizer corpus read a source through one
    schema (DocumentSource): format, split and name reach the reader (the init sample once dropped them and read a
    hub id as a file path)."""
    import datasets

    from eeve.config import CorpusConfig, SourceConfig, ValConfig
    from eeve.eval.texts import heldout_texts
    from eeve.model.init_data import sample_documents
    from eeve.text import sources

    rows = tmp_path / "ko.rows"  # JSON Lines under a suffix no format claims: format=json must reach the reader
    datasets.Dataset.from_dict({"content": ["첫째 문서", "둘째 문서"]}).to_json(str(rows), force_ascii=False)
    hub = dict(paths=[str(shards["dir"] / "repo")], text_field="content", format="hub", name="ko", split="other")
    local = dict(paths=[str(rows)], text_field="content", format="json")
    assert sample_documents({"h": SourceConfig(**hub, ratio=1.0)}, 3, None) == ["다른 설정"] * 3
    assert sample_documents({"j": SourceConfig(**local, ratio=1.0)}, 2, None) == ["첫째 문서", "둘째 문서"]
    assert heldout_texts({"ko": ValConfig(**local)}, 100) == {"ko": ["첫째 문서", "둘째 문서"]}
    assert [s.format for s in open_sources(CorpusConfig(**hub))] == ["hub"]
    assert all(issubclass(c, sources.DocumentSource) for c in (CorpusConfig, SourceConfig, ValConfig))


def test_packed_tokens_identical_to_txt(shards, expanded_tokenizer, tmp_path):
    """Parquet shards pack into byte-identical token ids and new-token counts as the .txt; the cache is keyed by
    the shards, so it is a different cache built independently."""
    tok = TokenizerInfo(expanded_tokenizer)
    a, built_a = pack_source("ko", [str(shards["txt"])], SourceOptions(), tok, 128, tmp_path, None)
    b, built_b = pack_source(
        "ko", [str(shards["dir"] / "ko-*.parquet")], SourceOptions(text_field="content"), tok, 128, tmp_path, None
    )
    assert built_a and built_b and a != b
    pa, pb = open_packed(a), open_packed(b)
    assert pa.n > 100
    assert np.array_equal(pa.tokens, pb.tokens) and np.array_equal(pa.new_counts, pb.new_counts)
    for k in ("documents", "text_bytes", "tokens_total", "new_tokens", "n_sequences"):
        assert pa.meta[k] == pb.meta[k], k
    assert pb.meta["files"][0]["path"].endswith("ko-00000.parquet")


def test_token_counts_identical_to_txt(shards, expanded_tokenizer):
    from tokenizers import Tokenizer

    from eeve.tokenizer.counting import count_tokens

    tok = Tokenizer.from_file(str(expanded_tokenizer / "tokenizer.json"))
    ref = count_tokens(tok, iter_documents([shards["txt"]]))
    parquet = iter_documents([str(shards["dir"] / "ko-*.parquet")], options=SourceOptions(text_field="content"))
    got = count_tokens(tok, parquet)
    assert ref.documents == got.documents and np.array_equal(ref.tokens, got.tokens)


@pytest.mark.slow
def test_tokenizer_built_from_parquet_equals_txt(shards, demo_data, tmp_path):
    """`tokenize.py` with `corpus.paths` on Parquet shards builds the same expanded tokenizer as from the .txt."""
    from eeve.tokenizer.run import run_from_config

    outs = {}
    for name, corpus in {
        "txt": {"paths": [str(shards["txt"])]},
        "parquet": {"paths": [str(shards["dir"] / "ko-*.parquet")], "text_field": "content"},
    }.items():
        outs[name] = run_from_config(
            {
                "base_tokenizer": str(demo_data / "base_tokenizer" / "tokenizer.model"),
                "corpus": corpus,
                "heldout": {"ko": str(demo_data / "ko" / "heldout.txt"), "en": None},
                "output_dir": str(tmp_path / name),
                "intermediate_vocab_size": 3000,
                "min_frequency": 3,
                "progress": False,
            }
        )
    assert (outs["txt"] / "tokenizer.json").read_bytes() == (outs["parquet"] / "tokenizer.json").read_bytes()
    a, b = (json.loads((outs[k] / "expansion.json").read_text()) for k in ("txt", "parquet"))
    assert a["new_tokens"] == b["new_tokens"] and a["compression"] == b["compression"]
    assert a["corpus"]["documents"] == b["corpus"]["documents"] > 0


def test_datamodule_batches_identical_to_txt(shards, expanded_tokenizer, tmp_path, demo_data):
    """Training data from `data.sources.*` / `data.validation.*` on Parquet and Arrow: the same batches as .txt."""
    from eeve.data.datamodule import EEVEDataModule

    d = shards["dir"]

    def dm(train: dict, val: dict) -> EEVEDataModule:
        cfg = {
            "seq_len": 64,
            "micro_batch_size": 4,
            "new_token_bias": 2.0,
            "sources": {
                "ko": {"paths": train.pop("paths"), "ratio": 0.9, **train},
                "en": {"paths": [str(demo_data / "en" / "heldout.txt")], "ratio": 0.1},
            },
            "validation": {"ko": {"paths": val.pop("paths"), "max_sequences": 8, **val}},
        }
        m = EEVEDataModule(cfg, expanded_tokenizer, tmp_path / "cache", base_dir=tmp_path, num_samples=64)
        m.setup("fit")
        return m

    a = dm({"paths": [str(shards["txt"])]}, {"paths": [str(shards["txt"])]})
    b = dm(
        {"paths": [str(d / "ko-*.parquet")], "text_field": "content"},
        {"paths": [str(d / "saved0"), str(d / "saved1")], "text_field": "content", "format": "arrow"},
    )
    for x, y in zip(a.train_dataloader(), b.train_dataloader()):
        assert np.array_equal(x["input_ids"].numpy(), y["input_ids"].numpy())
    assert np.array_equal(a.val_sets["ko"].tokens, b.val_sets["ko"].tokens)
    assert a.new_token_share() == b.new_token_share()


def test_bad_sources_one_line_errors(shards, tmp_path):
    d = shards["dir"]
    cases = {
        "no column 'text'": lambda: docs_of([d / "ko-00000.parquet"]),  # the column is called content
        "has no column 'body'": lambda: docs_of([d / "saved0"], text_field="body"),
        "unsupported extension": lambda: docs_of([_touch(tmp_path / "x.csv")]),
        "format='csv' is unknown": lambda: docs_of([shards["txt"]], format="csv"),
        "set format=hub": lambda: docs_of(["someone/korean-web"]),
        "is a directory": lambda: docs_of([d]),
    }
    for expected, call in cases.items():
        with pytest.raises(CorpusError, match=expected) as e:
            call()
        assert "\n" not in str(e.value), str(e.value)


def _touch(p: Path) -> Path:
    p.write_text("a,b\n")
    return p


def test_hub_id_without_network_names_offline_alternatives(tmp_path):
    """A hub id that cannot be reached (offline here, with an empty datasets cache): one line naming both ways out,
    through `python tokenize.py` exit code 2."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tokenize.py"),
            "progress=false",
            "corpus.format=hub",
            "corpus.paths=[someone/korean-web]",
            "corpus.name=ko",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot load hub dataset 'someone/korean-web'"), r.stderr
    assert "HF_DATASETS_OFFLINE=1" in lines[0] and "local Parquet/Arrow/JSON files" in lines[0]
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_txt_and_jsonl_sources_unchanged(demo_data):
    """The .txt/.jsonl readers are the line readers they were: .jsonl keeps inner newlines, .txt one line each."""
    srcs = open_sources([demo_data / "pairs" / "heldout.jsonl", demo_data / "ko" / "heldout.txt"])
    assert [s.format for s in srcs] == ["jsonl", "text"]
    docs, stats = docs_of([demo_data / "pairs" / "heldout.jsonl"])
    assert any("\n" in x for x in docs) and stats.documents == len(docs)
    assert stats.bytes_read == (demo_data / "pairs" / "heldout.jsonl").stat().st_size


# Two "ranks" packing the same source into a shared cache: each process says it is ready, waits for the go, packs,
# and reports whether it built the cache and when it finished.
RANK = r"""
import json, sys, time
from pathlib import Path
from eeve.data.packing import pack_source
from eeve.tokenizer.info import TokenizerInfo
from eeve.text.sources import SourceOptions
tok_dir, txt, cache, me = sys.argv[1:5]
tok = TokenizerInfo(Path(tok_dir))
(Path(cache) / f"ready{me}").touch()
while not (Path(cache) / "go").exists():
    time.sleep(0.01)
folder, built = pack_source("ko", [txt], SourceOptions(), tok, 128, Path(cache), None)
print(json.dumps({"folder": str(folder), "built": built, "end": time.time()}))
"""


@pytest.mark.slow
def test_two_processes_pack_a_shared_cache_once(shards, expanded_tokenizer, tmp_path):
    """Ranks (or nodes) on one filesystem: one process tokenizes, the other waits for it and reads its cache."""
    import time

    cache = tmp_path / "cache"
    cache.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(expanded_tokenizer), str(shards["txt"]), str(cache), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(2)
    ]
    deadline = time.time() + 120
    while not all((cache / f"ready{r}").exists() for r in range(2)) and time.time() < deadline:
        time.sleep(0.01)
    (cache / "go").touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(r["built"] for r in res) == [False, True]
    assert res[0]["folder"] == res[1]["folder"]
    builder, waiter = (0, 1) if res[0]["built"] else (1, 0)
    meta = Path(res[builder]["folder"]) / "meta.json"
    assert res[waiter]["end"] >= meta.stat().st_mtime  # it returned only once the cache was complete
    assert "another process is packing it" in outs[waiter][1]
    assert [p.name for p in (cache / "packed").iterdir()] == [Path(res[0]["folder"]).name]  # one cache, no leftovers


def test_fast_flat_encoding_equals_per_document_encoding(shards, expanded_tokenizer):
    """Packing's array-built BOS + ids + EOS stream is the per-document `encode_batch` one, for every BOS/EOS
    combination a tokenizer may need."""
    tok = TokenizerInfo(expanded_tokenizer)
    docs = [x for x in shards["lines"][:500] if x.strip()]
    for bos, eos in [(False, True), (True, True), (True, False), (False, False)]:
        tok.add_bos, tok.add_eos = bos, eos
        ref = [t for d in tok.encode_docs(docs) for t in d]
        assert np.array_equal(tok.encode_flat(docs), np.array(ref, dtype=np.int64)), (bos, eos)
