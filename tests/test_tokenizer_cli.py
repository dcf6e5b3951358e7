"""`python tokenize.py` as users run it: a real build on a small corpus, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tokenize.py"), "progress=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def small(demo_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    ko = (demo_data / "ko" / "train.txt").read_text(encoding="utf-8").split("\n")[:3000]
    (d / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    (d / "ko.txt").open("ab").write(b"\xff\xfe broken line\n")  # invalid UTF-8: skipped and reported
    return d


def common(demo_data, d: Path) -> list[str]:
    return [
        f"base_tokenizer={demo_data / 'base_tokenizer' / 'tokenizer.model'}",
        f"corpus.paths=[{d / 'ko.txt'}]",
        f"heldout.ko={demo_data / 'ko' / 'heldout.txt'}",
        f"heldout.en={demo_data / 'en' / 'heldout.txt'}",
        "intermediate_vocab_size=3000",
        "min_frequency=3",
        f"hydra.run.dir={d / 'run'}",
    ]


@pytest.mark.slow
def test_cli_builds_into_hydra_run_dir(demo_data, small):
    r = run(*common(demo_data, small), "run_name=cli")
    assert r.returncode == 0, r.stderr
    out = small / "run" / "tokenizer"  # default output_dir: inside the Hydra run dir, not the CWD
    rep = json.loads((out / "expansion.json").read_text(encoding="utf-8"))
    assert rep["vocab_size"] % 64 == 0 and rep["corpus"]["invalid_utf8_lines"] == 1
    assert "1 invalid UTF-8 lines skipped" in r.stdout and "chars/token" in r.stdout
    assert rep["compression"]["en"]["non_target_mismatches"] == 0
    assert not list(small.glob("run/.tokenizer.tmp-*"))
    # re-running replaces the existing output only on success
    r2 = run(*common(demo_data, small), "corpus.paths=[/nonexistent/x.txt]")
    assert r2.returncode != 0 and (out / "expansion.json").is_file()


@pytest.mark.slow
def test_cli_count_mode_shards(demo_data, small):
    from eeve.tokenizer.counting import merge_counts

    (small / "a.txt").write_text("\n".join(["가나다 라마", "hello 세계"] * 50) + "\n", encoding="utf-8")
    (small / "b.txt").write_text("\n".join(["데이터베이스 함수"] * 30) + "\n", encoding="utf-8")
    outs = []
    for i in range(2):
        o = small / f"c{i}.npz"
        r = run(
            f"corpus.paths=[{small / 'a.txt'},{small / 'b.txt'}]",
            "mode=count",
            f"count.tokenizer_dir={demo_data / 'base_tokenizer'}",
            f"count.shard_index={i}",
            "count.num_shards=2",
            f"count.out={o}",
            f"hydra.run.dir={small / 'run_count'}",
        )
        assert r.returncode == 0, r.stderr
        outs.append(o)
    o = small / "all.npz"
    r = run(
        f"corpus.paths=[{small / 'a.txt'},{small / 'b.txt'}]",
        "mode=count",
        f"count.tokenizer_dir={demo_data / 'base_tokenizer'}",
        f"count.out={o}",
        f"hydra.run.dir={small / 'run_count'}",
    )
    assert r.returncode == 0, r.stderr
    merged, whole = merge_counts(outs), merge_counts([o])
    assert (merged.tokens == whole.tokens).all() and merged.documents == whole.documents == 130


BAD = {
    "missing_file": (["corpus.paths=[{d}/nope.txt]"], "does not exist"),
    "glob_no_match": (["corpus.paths=[{d}/*.zzz]"], "matches no file"),
    "empty_corpus": (["corpus.paths=[{d}/empty.txt]"], "no documents"),
    "no_target": (["corpus.paths=[{d}/en.txt]"], "no character of the target scripts [Hangul]"),
    "unknown_script": (["target.scripts=[Devangari]"], "did you mean Devanagari"),
    "ascii_range": (["target.ranges=[U+0041-U+005A]"], "includes ASCII"),
    "bad_jsonl": (["corpus.paths=[{d}/bad.jsonl]"], "not valid JSON"),
    "missing_field": (["corpus.paths=[{d}/nofield.jsonl]"], "no string field 'text'"),
    "base_missing": (["base_tokenizer={d}/no_such_base"], "does not exist"),
    "base_wordpiece": (["base_tokenizer={d}/wordpiece"], "WordPiece"),
    "unwritable_output": (["output_dir={d}/en.txt/sub/out"], "not writable"),
    "key_typo": (["min_frequncy=3"], "did you mean 'min_frequency'"),
    "nested_key_typo": (["corpus.pahts=[x]"], "did you mean 'corpus.paths'"),
    "append_unknown_key": (["+foo=1"], "unknown config key 'foo'"),
    "bad_type": (["min_frequency=abc"], "min_frequency"),
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("\n\n   \n")
    (d / "en.txt").write_text("hello world\nonly english here\n")
    (d / "bad.jsonl").write_text('{"text": "안녕"}\n{bad\n', encoding="utf-8")
    (d / "nofield.jsonl").write_text('{"txt": "안녕"}\n', encoding="utf-8")
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.train_from_iterator(
        ["hello world"] * 5, trainers.WordPieceTrainer(vocab_size=50, special_tokens=["[UNK]"], show_progress=False)
    )
    (d / "wordpiece").mkdir()
    wp.save(str(d / "wordpiece" / "tokenizer.json"))
    return d


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_input_one_line_error(demo_data, bad_inputs, case):
    args, needle = BAD[case]
    d = bad_inputs
    out = d / f"out_{case}"
    defaults = [
        f"base_tokenizer={demo_data / 'base_tokenizer' / 'tokenizer.model'}",
        f"corpus.paths=[{demo_data / 'ko' / 'heldout.txt'}]",
        f"output_dir={out}",
        f"hydra.run.dir={d / 'run'}",
        "intermediate_vocab_size=1000",
    ]
    r = run(*defaults, *[a.format(d=d) for a in args])
    err = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode != 0
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not out.exists() and not list(d.glob(f".out_{case}.tmp-*"))
