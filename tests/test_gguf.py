"""eeve.gguf / `python -m eeve.export gguf`: llama.cpp's converter on real expanded exports of both tokenizer kinds,
checked with llama.cpp itself (the binding built by `make gguf`): identical token ids on the demo's held-out Korean
and English, and the f32 GGUF's logits equal to the HF model's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from eeve.export import main as export_main
from eeve.gguf.source import LLAMA_CPP_PYTHON, llama_cpp_dir

ROOT = Path(__file__).resolve().parents[1]


def test_pinned_version_is_the_installed_extra():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'gguf = ["llama-cpp-python=={LLAMA_CPP_PYTHON}"' in pyproject
    assert f"LLAMA_CPP_PYTHON := {LLAMA_CPP_PYTHON}\n" in (ROOT / "Makefile").read_text(encoding="utf-8")


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama.cpp's Python binding is built by `make gguf`")


def lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def make_export(tok_dir: Path, out: Path, special_id: int | None = None) -> Path:
    """A stage export: the tiny Llama expanded to ``tok_dir``'s vocabulary (mean-of-subwords rows), as export_hf
    writes it."""
    from test_expansion import tiny_cfg

    from eeve.model.expand import expand_model, read_expansion
    from eeve.model.export import export_hf
    from eeve.model.load import load_base_model

    meta = read_expansion(tok_dir)
    cfg = tiny_cfg(meta["base_vocab_size"])
    cfg.pop("tokenizer", None)  # `${paths.root}/...` for recipe=no_expansion: not resolvable (nor needed) here
    if special_id is not None:  # byte-level: <|endoftext|> is BOS and EOS (the tiny config's 1 and 2 are Mistral's)
        cfg["config"].update(bos_token_id=special_id, eos_token_id=special_id)
    model = load_base_model(cfg, seed=0)
    expand_model(model, tok_dir / "base_tokenizer", meta["new_tokens"], meta["base_vocab_size"])
    with torch.no_grad():  # trained-looking new rows, not only means of old ones
        model.lm_head.weight[meta["base_vocab_size"] :].normal_(0, 0.05)
    return export_hf(model, None, tok_dir, out)


@pytest.fixture(scope="module")
def tree():
    return llama_cpp_dir()


@pytest.mark.slow
def test_concurrent_unpacks_share_one_converter_tree(tree, tmp_path):
    """Processes that find no tree unpack it side by side (pytest-xdist workers did): each into its own folder,
    the first rename wins and the others use its tree; only the converter's part of the sdist is unpacked."""
    from concurrent.futures import ThreadPoolExecutor

    from eeve.gguf.source import SDIST, cache_dir

    shutil.copy(cache_dir() / SDIST, tmp_path / SDIST)
    with ThreadPoolExecutor(3) as pool:
        trees = list(pool.map(lambda _: llama_cpp_dir(tmp_path), range(3)))
    assert len(set(trees)) == 1 and (trees[0] / "convert_hf_to_gguf.py").is_file()
    assert (trees[0] / "gguf-py" / "gguf").is_dir() and not (trees[0] / "ggml").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no unpack folder left behind


@pytest.fixture(scope="module")
def sp_export(expanded_tokenizer, tmp_path_factory):
    return make_export(expanded_tokenizer, tmp_path_factory.mktemp("sp") / "stage7")


@pytest.fixture(scope="module")
def bl_export(demo_data, tmp_path_factory):
    from eeve.demo.byte_level import train_byte_level_base
    from eeve.tokenizer.run import run_from_config

    root = tmp_path_factory.mktemp("bl")
    base = train_byte_level_base(
        lines(demo_data / "en" / "train.txt")[:3000] + lines(demo_data / "ko" / "train.txt")[:300], root / "base"
    )
    heldout = {lang: str(demo_data / lang / "heldout.txt") for lang in ("ko", "en")}
    run_from_config(
        {
            "base_tokenizer": str(base),
            "corpus": {"paths": [str(demo_data / "ko" / "train.txt")]},
            "heldout": heldout,
            "output_dir": str(root / "tokenizer"),
            "intermediate_vocab_size": 4000,
            "min_frequency": 5,
            "progress": False,
        }
    )
    return make_export(root / "tokenizer", root / "stage7", special_id=0)


def sp_variants(export: Path, tmp: Path) -> list[Path]:
    """The export as written, and -- when it holds a tokenizer.model, which llama.cpp's converter reads first --
    a copy without it, so that the tokenizer.json path is checked too."""
    if not (export / "tokenizer.model").is_file():
        return [export]
    json_only = tmp / "stage7-json-only"
    shutil.copytree(export, json_only)
    (json_only / "tokenizer.model").unlink()
    return [export, json_only]


def check_against_hf(gguf: Path, export: Path, texts: list[str]) -> None:
    """llama.cpp's ids == HF's on every line (special tokens as each side adds them); f32 logits equal."""
    llama_cpp = _llama_cpp()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    ids = [(tok(t).input_ids, vocab.tokenize(t.encode("utf-8"), add_bos=True, special=False)) for t in texts]
    bad = [(t, h, c) for t, (h, c) in zip(texts, ids) if h != c]
    assert not bad, f"{len(bad)}/{len(texts)} lines differ, first: {bad[0]}"
    base_vocab = json.loads((export / "expansion.json").read_text(encoding="utf-8"))["base_vocab_size"]
    assert sum(len(h) for h, _ in ids) > 20_000 and len({i for h, _ in ids for i in h if i >= base_vocab}) > 300

    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    f32 = llama_cpp.GGML_TYPE_F32  # llama.cpp's default f16 KV cache alone differs by ~3e-4
    llm = llama_cpp.Llama(str(gguf), logits_all=True, n_ctx=256, n_threads=2, type_k=f32, type_v=f32, verbose=False)
    for t in [texts[k] for k in (6, 7, len(texts) - 1)]:  # Korean and English held-out lines
        seq = tok(t).input_ids[:64]
        llm.reset()
        llm.eval(seq)
        cpp = torch.from_numpy(llm.scores[: len(seq)].copy())
        with torch.no_grad():
            hf = model(torch.tensor([seq])).logits[0]
        assert cpp.shape == hf.shape
        torch.testing.assert_close(cpp, hf, atol=1e-5, rtol=1e-4)
    llm.close()
    vocab.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sentencepiece", "byte_level"])
def test_gguf_tokenizes_and_computes_like_hf(kind, request, tree, demo_data, tmp_path, capsys):
    _llama_cpp()
    export = request.getfixturevalue("sp_export" if kind == "sentencepiece" else "bl_export")
    heldout = [demo_data / "ko" / "heldout.txt", demo_data / "en" / "heldout.txt"]
    texts = lines(heldout[0]) + lines(heldout[1])
    for variant in sp_variants(export, tmp_path) if kind == "sentencepiece" else [export]:
        out = tmp_path / f"{variant.name}.gguf"
        args = ["gguf", str(variant), "--out", str(out), "--outtype", "f32"]
        export_main(args + sum((["--check-text", str(h)] for h in heldout), []))
        said = capsys.readouterr().out
        assert f"wrote {out}" in said and f"{len(texts) + 6}/{len(texts) + 6} lines" in said, said
        check_against_hf(out, variant, texts)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def _fails_with(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        export_main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.slow
def test_gguf_refuses_an_unknown_byte_level_pre_tokenizer(bl_export, tree, tmp_path, capsys):
    """A byte-level pre-tokenizer that is not GPT-2's (here: with a prefix space) and that the converter does not
    know: one line, no file."""
    export = tmp_path / "stage7"
    shutil.copytree(bl_export, export)
    tj = json.loads((export / "tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"]["add_prefix_space"] = True
    (export / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    err = _fails_with(["gguf", str(export), "--no-check"], capsys)
    assert "does not know the pre-tokenizer" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage7"]


@pytest.mark.slow
def test_gguf_that_tokenizes_differently_is_not_written(sp_export, tree, tmp_path, capsys):
    """An NFKC normaliser (the converter ignores tokenizer.json's normaliser): llama.cpp splits full-width text
    differently, so the GGUF is deleted and an existing file at --out stays as it was."""
    _llama_cpp()
    export = tmp_path / "stage7"
    shutil.copytree(sp_export, export, ignore=shutil.ignore_patterns("tokenizer.model"))
    tj = json.loads((export / "tokenizer.json").read_text(encoding="utf-8"))
    tj["normalizer"]["normalizers"].insert(0, {"type": "NFKC"})
    (export / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    (tmp_path / "check.txt").write_text("ＡＢＣ ① ﾊﾝｶｸ\n", encoding="utf-8")
    out = tmp_path / "old.gguf"
    out.write_bytes(b"previous")
    err = _fails_with(["gguf", str(export), "--out", str(out), "--check-text", str(tmp_path / "check.txt")], capsys)
    assert "tokenizes 1 of 7 check lines differently" in err and "no GGUF written" in err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.txt", "old.gguf", "stage7"]
