"""EEVEDataModule: packing, caching, sampling (determinism, ranks, resume, bias, mixture), token_bytes.

Real tokenizer (a small SentencePiece-style BPE with byte fallback trained here on the demo data's Korean and
English prose), real text, no mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eeve.config import DataConfig, to_object
from eeve.data.datamodule import EEVEDataModule
from eeve.data.sampling import BLOCK
from eeve.errors import ConfigError, CorpusError
from eeve.tokenizer.info import TokenizerInfo, tokenizer_info


def _korean_paragraphs(demo: Path) -> list[str]:
    """Real Korean prose from the demo data (LibreOffice help + konlpy), long lines only, capped for speed."""
    lines = (demo / "ko" / "train.txt").read_text(encoding="utf-8").splitlines()
    return [x for x in lines if len(x) >= 20][:3000]


def _english_paragraphs(demo: Path) -> list[str]:
    lines = (demo / "en" / "train.txt").read_text(encoding="utf-8").splitlines()
    return [x for x in lines if len(x) >= 40 and x.isascii()][:2000]


def _train_tokenizer(folder: Path, texts: list[str], vocab_size: int, new_tokens: int) -> Path:
    """Mistral-like: Metaspace ▁, BPE with byte fallback, <unk>/<s>/</s>, <0xNN> pieces, BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials + byte_pieces, limit_alphabet=600, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    spec = json.loads(tok.to_str())
    # like Mistral: byte pieces are ordinary vocab entries, not added tokens
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]
    tok = Tokenizer.from_str(json.dumps(spec))
    folder.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    V = tok.get_vocab_size(with_added_tokens=True)
    (folder / "expansion.json").write_text(
        json.dumps({"base_vocab_size": V - new_tokens, "vocab_size": V, "base_kind": "sentencepiece_bpe"})
    )
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_data) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    ko, en = _korean_paragraphs(demo_data), _english_paragraphs(demo_data)
    assert len(ko) > 500 and len(en) > 300, (len(ko), len(en))
    files = {
        "ko_train": ko[: int(len(ko) * 0.85)],
        "ko_val": ko[int(len(ko) * 0.85) :],
        "en_train": en[: int(len(en) * 0.85)],
        "en_val": en[int(len(en) * 0.85) :],
    }
    paths = {}
    for name, lines in files.items():
        paths[name] = root / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = root / "pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as f:
        for e, k in zip(en[:200], ko[:200]):
            f.write(json.dumps({"text": e + "\n" + k, "en": e, "ko": k}, ensure_ascii=False) + "\n")
    paths["pairs"] = pairs
    tok1 = _train_tokenizer(root / "tok1", ko + en, vocab_size=1400, new_tokens=300)
    tok2 = _train_tokenizer(root / "tok2", ko + en, vocab_size=1200, new_tokens=200)
    return {"root": root, "paths": paths, "tok": tok1, "tok2": tok2, "ko": ko, "en": en}


def _cfg(corpus, **over) -> dict:
    p = corpus["paths"]
    cfg = {
        "seq_len": 64,
        "micro_batch_size": 4,
        "num_workers": 0,
        "new_token_bias": 2.0,
        "seed": 0,
        "sources": {
            "ko_web": {"paths": [p["ko_train"].name], "ratio": 0.8346, "lang": "ko"},
            "multilingual": {"paths": [p["en_train"].name], "ratio": 0.1069, "lang": "en"},
            "en_ko_pairs": {"paths": [p["pairs"].name], "ratio": 0.0586, "lang": "en-ko"},
        },
        "validation": {
            "ko": {"paths": [p["ko_val"].name], "max_sequences": 16},
            "en": {"paths": [p["en_val"].name], "max_sequences": 16},
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _dm(corpus, cache_dir, seed=0, **kw) -> EEVEDataModule:
    cfg_over = kw.pop("cfg", {})
    dm = EEVEDataModule(_cfg(corpus, **cfg_over), corpus["tok"], cache_dir, base_dir=corpus["root"], seed=seed, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _batches(dm, k=None) -> list[torch.Tensor]:
    out = []
    for i, b in enumerate(dm.train_dataloader()):
        if k is not None and i >= k:
            break
        out.append(b["input_ids"])
    return out


# ----------------------------------------------------------------------------------------------- tests
def test_batches_shape_and_determinism(corpus, cache_dir):
    a = _dm(corpus, cache_dir, seed=0, num_samples=64)
    b = _dm(corpus, cache_dir, seed=0, num_samples=64)
    c = _dm(corpus, cache_dir, seed=1, num_samples=64)
    ba, bb, bc = _batches(a), _batches(b), _batches(c)
    assert len(ba) == 16
    assert ba[0].dtype == torch.long and ba[0].shape == (4, 64)
    assert all(torch.equal(x, y) for x, y in zip(ba, bb))
    assert not torch.equal(torch.stack(ba), torch.stack(bc))


def test_ranks_partition_global_stream(corpus, cache_dir):
    n = 2 * BLOCK + 96  # crosses RNG blocks
    single = _dm(corpus, cache_dir, num_samples=n, cfg={"micro_batch_size": 1})
    ref = np.fromiter(iter(_sampler(single)), dtype=np.int64)
    assert len(ref) == n
    for W in (2, 3):
        per = [
            np.fromiter(
                iter(
                    _sampler(
                        _dm(corpus, cache_dir, rank=r, world_size=W, num_samples=n * W, cfg={"micro_batch_size": 1})
                    )
                ),
                dtype=np.int64,
            )
            for r in range(W)
        ]
        # rank r holds global samples r, r+W, ...; together (interleaved) they are the single-rank stream
        merged = np.empty(sum(map(len, per)), dtype=np.int64)
        for r in range(W):
            merged[r::W] = per[r]
        assert np.array_equal(merged[:n], ref)

        # disjoint as global sample numbers
        def global_numbers(s):  # global sample numbers the next iterator yields on this rank
            return set(range(s._first() + s.rank, s.window()[1], s.world_size))

        glob = [
            global_numbers(
                _sampler_obj(
                    _dm(corpus, cache_dir, rank=r, world_size=W, num_samples=96 * W, cfg={"micro_batch_size": 1})
                )
            )
            for r in range(W)
        ]
        assert all(not (glob[i] & glob[j]) for i in range(W) for j in range(i + 1, W))
        assert set().union(*glob) == set(range(96 * W))


def _sampler_obj(dm):
    dm.train_dataloader()
    return dm._train_sampler


def _sampler(dm):
    return _sampler_obj(dm)


def test_resume_continues_exactly(corpus, cache_dir):
    full = _batches(_dm(corpus, cache_dir, seed=3, num_samples=80))
    dm = _dm(corpus, cache_dir, seed=3, num_samples=80)
    it = iter(dm.train_dataloader())
    first = [next(it)["input_ids"] for _ in range(7)]
    state = dm.state_dict()
    assert state["consumed_samples"] == 7 * 4
    dm2 = _dm(corpus, cache_dir, seed=3, num_samples=80)
    dm2.load_state_dict(json.loads(json.dumps(state)))
    rest = _batches(dm2)
    assert len(first) + len(rest) == len(full) == 20
    assert all(torch.equal(x, y) for x, y in zip(first + rest, full))


def test_resume_with_lightning_trainer(corpus, cache_dir, tmp_path):
    """fit 6 steps, checkpoint, resume to 12: the batches match an uninterrupted 12-step run."""
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, i):
            self.seen.append(batch["input_ids"].clone())
            return (self.w * batch["input_ids"].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def trainer(steps, root):
        return L.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=root,
            accumulate_grad_batches=2,
            use_distributed_sampler=False,
        )

    ref = Recorder()
    trainer(12, tmp_path / "a").fit(ref, datamodule=_dm(corpus, cache_dir, seed=5))
    part = Recorder()
    t1 = trainer(6, tmp_path / "b")
    dm1 = _dm(corpus, cache_dir, seed=5)
    t1.fit(part, datamodule=dm1)
    ckpt = tmp_path / "b" / "c.ckpt"
    t1.save_checkpoint(ckpt)
    assert dm1.state_dict()["consumed_samples"] == 6 * 2 * 4
    cont = Recorder()
    trainer(12, tmp_path / "b").fit(cont, datamodule=_dm(corpus, cache_dir, seed=5), ckpt_path=ckpt)
    assert len(ref.seen) == 24 and len(part.seen) + len(cont.seen) == 24
    assert all(torch.equal(x, y) for x, y in zip(part.seen + cont.seen, ref.seen))


def test_bias_raises_new_token_share(corpus, cache_dir):
    dm0 = _dm(corpus, cache_dir, cfg={"new_token_bias": 0.0}, num_samples=4096)
    dm4 = _dm(corpus, cache_dir, cfg={"new_token_bias": 4.0}, num_samples=4096)
    base = dm0.new_token_share(False)
    assert dm0.new_token_share(True) == pytest.approx(base)  # bias 0 = unbiased
    assert dm4.new_token_share(False) == pytest.approx(base)
    assert dm4.new_token_share(True) > base + 0.005
    # measured on the actual stream
    for dm in (dm0, dm4):
        ids = torch.cat(_batches(dm))
        measured = (ids >= dm.base_vocab_size).float().mean().item()
        assert measured == pytest.approx(dm.new_token_share(True), abs=0.01)


def test_mixture_ratios(corpus, cache_dir):
    dm = _dm(corpus, cache_dir, num_samples=20000)
    flat = np.fromiter(iter(_sampler(dm)), dtype=np.int64)
    src = np.searchsorted(dm.stream.offsets, flat, side="right") - 1
    frac = np.bincount(src, minlength=3) / len(src)
    assert np.allclose(frac, [0.8346, 0.1069, 0.0586], atol=0.01), frac


def test_cache_reused_memmap_and_keyed_by_tokenizer(corpus, tmp_path):
    cache = tmp_path / "cache"
    a = EEVEDataModule(_cfg(corpus), corpus["tok"], cache, base_dir=corpus["root"])
    a.prepare_data()
    assert len(a.built) == 5
    folders = sorted((cache / "packed").iterdir())
    assert len(folders) == 5 and not any(f.name.startswith(".tmp") for f in folders)
    mtimes = {f: (f / "tokens.bin").stat().st_mtime_ns for f in folders}
    b = EEVEDataModule(_cfg(corpus), corpus["tok"], cache, base_dir=corpus["root"])
    b.prepare_data()
    b.setup()
    assert b.built == []
    assert {f: (f / "tokens.bin").stat().st_mtime_ns for f in folders} == mtimes
    assert isinstance(b.train_sources["ko_web"].tokens, np.memmap)
    assert b.train_sources["ko_web"].tokens.dtype == np.uint16
    c = EEVEDataModule(_cfg(corpus), corpus["tok2"], cache, base_dir=corpus["root"])
    c.prepare_data()
    assert len(c.built) == 5 and len(list((cache / "packed").iterdir())) == 10
    d = EEVEDataModule(_cfg(corpus, seq_len=32), corpus["tok"], cache, base_dir=corpus["root"])
    d.prepare_data()
    assert len(d.built) == 5


def test_packed_ids_decode_to_source_text(corpus, cache_dir):
    dm = _dm(corpus, cache_dir)
    tok = TokenizerInfo(corpus["tok"])
    p = dm.train_sources["ko_web"]
    ids = np.asarray(p.tokens[: min(p.n, 40)]).reshape(-1).tolist()
    bos, eos = tok.bos_id, tok.eos_id
    starts = [i for i, t in enumerate(ids) if t == bos]
    assert ids[0] == bos and starts[0] == 0
    starts = starts[1:]
    docs = []
    for a, b in zip(starts, starts[1:]):
        doc = ids[a:b]
        assert doc[0] == bos and doc[-1] == eos and eos not in doc[1:-1]
        docs.append(tok.tok.decode(doc[1:-1]))
    lines = [ln for ln in corpus["paths"]["ko_train"].read_text(encoding="utf-8").splitlines() if ln.strip()]
    # every whole document is the next source line, in order
    assert len(docs) > 5
    assert docs == lines[1 : 1 + len(docs)]
    assert tok.tok.decode(ids[1 : starts[0] - 1]) == lines[0] and ids[starts[0] - 1] == eos
    # the sequences are the source's documents, in order, cut at seq_len
    n_tokens = p.meta["tokens_total"]
    assert p.n == n_tokens // 64 and p.meta["tokens_dropped_tail"] == n_tokens % 64
    assert int(p.new_counts[0]) == int((np.asarray(p.tokens[0]) >= dm.base_vocab_size).sum())


def test_validation_loaders(corpus, cache_dir):
    dm = _dm(corpus, cache_dir)
    assert dm.val_names == ["ko", "en"]
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    full = [torch.cat([b["input_ids"] for b in dl]) for dl in loaders]
    assert [len(x) for x in full] == [16, 16]
    parts = []
    for r in range(3):
        d = _dm(corpus, cache_dir, rank=r, world_size=3)
        parts.append(torch.cat([b["input_ids"] for b in d.val_dataloader()[0]]))
    assert [len(x) for x in parts] == [5, 5, 5]  # 16 -> 15: equal batches on every rank
    merged = torch.stack(parts, 1).reshape(-1, 64)
    assert torch.equal(merged, full[0][:15])


def test_token_bytes_matches_utf8(corpus, cache_dir):
    dm = _dm(corpus, cache_dir)
    tb = dm.token_bytes
    assert tb.dtype == torch.long and len(tb) == dm.vocab_size
    tok = TokenizerInfo(corpus["tok"])
    assert tb[tok.bos_id] == 0 and tb[tok.eos_id] == 0
    assert tb[tok.tok.token_to_id("<0xE3>")] == 1
    docs = corpus["ko"][:50] + corpus["en"][:50] + ["ünïcödé 🎉 텍스트 \u00a0x", "  leading and  double spaces"]
    for d in docs:
        ids = tok.tok.encode(d, add_special_tokens=False).ids
        # Metaspace(prepend_scheme="first") prepends one ▁ unless the text already starts with a space
        assert int(tb[ids].sum()) == len(d.encode("utf-8")) + (0 if d.startswith(" ") else 1), d


def test_token_bytes_byte_level(tmp_path, demo_data):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _korean_paragraphs(demo_data)[:300] + _english_paragraphs(demo_data)[:300],
        trainers.BpeTrainer(
            vocab_size=800,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    info = TokenizerInfo(tmp_path)
    tb = info.token_bytes()
    assert tb[info.tok.token_to_id("<|endoftext|>")] == 0
    for d in ["대한민국은 민주공화국이다.", "Hello, world! ünï", "🎉 mixed 텍스트"]:
        ids = info.tok.encode(d).ids
        assert int(tb[ids].sum()) == len(d.encode("utf-8"))

    # one TokenizerInfo per folder and process while its files stay the same; a rewritten folder is read again
    shared = tokenizer_info(tmp_path)
    assert shared is tokenizer_info(tmp_path) and shared is not info and shared.hash == info.hash
    tok.add_tokens(["텍스트토큰"])
    tok.save(str(tmp_path / "tokenizer.json"))
    again = tokenizer_info(tmp_path)
    assert again is not shared and again.vocab_size == shared.vocab_size + 1


def test_bad_input_raises_corpus_error(corpus, tmp_path):
    cfg = _cfg(corpus)
    cfg["sources"]["ko_web"]["paths"] = ["missing.txt"]
    with pytest.raises(CorpusError, match="does not exist"):
        EEVEDataModule(cfg, corpus["tok"], tmp_path, base_dir=corpus["root"]).prepare_data()
    empty = corpus["root"] / "empty.txt"
    empty.write_text("\n\n")
    cfg = _cfg(corpus)
    cfg["sources"]["ko_web"]["paths"] = [empty.name]
    with pytest.raises(CorpusError, match="no documents"):
        EEVEDataModule(cfg, corpus["tok"], tmp_path, base_dir=corpus["root"]).prepare_data()
    short = corpus["root"] / "short.txt"
    short.write_text("짧은 글.\n")
    cfg["sources"]["ko_web"]["paths"] = [short.name]
    with pytest.raises(CorpusError, match="fewer than one sequence"):
        EEVEDataModule(cfg, corpus["tok"], tmp_path, base_dir=corpus["root"]).prepare_data()
    assert not (tmp_path / "packed").exists() or not any((tmp_path / "packed").iterdir())  # nothing half-written
    cfg = _cfg(corpus)
    for missing in ("???", ["???"], []):
        cfg["sources"]["ko_web"]["paths"] = missing
        with pytest.raises(ConfigError, match="paths"):
            EEVEDataModule(cfg, corpus["tok"], tmp_path, base_dir=corpus["root"])
    with pytest.raises(CorpusError, match="relative"):
        EEVEDataModule(_cfg(corpus), corpus["tok"], tmp_path, base_dir=None).prepare_data()
    with pytest.raises(ConfigError, match="seqlen"):
        to_object(DataConfig, {**_cfg(corpus), "seqlen": 3})


def test_demo_config_loads(corpus):
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "conf" / "data"
    demo = to_object(DataConfig, OmegaConf.load(root / "demo.yaml"))
    assert list(demo.sources) == ["ko_web", "multilingual", "en_ko_pairs"]
    assert sum(s.ratio for s in demo.sources.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(demo.validation) == ["ko", "en"]
    solar = OmegaConf.load(root / "solar.yaml")
    assert solar.seq_len == 4096 and OmegaConf.is_missing(solar.sources.ko_web, "paths")


def test_workers_match_single_process(corpus, cache_dir):
    a = _batches(_dm(corpus, cache_dir, seed=7, num_samples=32))
    b = _batches(_dm(corpus, cache_dir, seed=7, num_samples=32, cfg={"num_workers": 1}))
    assert len(a) == len(b) == 8 and all(torch.equal(x, y) for x, y in zip(a, b))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / ".cache" / "demo" / "manifest.json").is_file(), reason="demo data not built")
def test_demo_config_end_to_end(corpus, tmp_path):
    """conf/data/demo.yaml on the demo corpus, with the expanded demo tokenizer when tokenize.py has made one."""
    from omegaconf import OmegaConf

    tok_dir = REPO / "outputs" / "tokenize" / "demo" / "tokenizer"
    if not (tok_dir / "expansion.json").is_file():
        tok_dir = corpus["tok"]
    dm = EEVEDataModule(
        OmegaConf.load(REPO / "conf" / "data" / "demo.yaml"), tok_dir, tmp_path, base_dir=REPO, num_samples=64
    )
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))["input_ids"]
    assert batch.shape == (8, 128) and int(batch.max()) < dm.vocab_size
    assert [len(dl.dataset) for dl in dm.val_dataloader()] == [64, 64]
    assert dm.new_token_share(True) > dm.new_token_share(False) > 0
    ko = dm.train_sources["ko_web"]
    ids = np.asarray(ko.tokens[:8]).reshape(-1)
    tb = dm.token_bytes
    # bits-per-byte denominator: token bytes of the packed Korean ≈ its UTF-8 size (one ▁ per document extra)
    text = dm.tokenizer.tok.decode(ids.tolist(), skip_special_tokens=True)
    n_docs = int((ids == dm.tokenizer.bos_id).sum())
    assert abs(int(tb[torch.from_numpy(ids.astype(np.int64))].sum()) - len(text.encode())) <= 2 * n_docs + 2


def test_text_bytes_sums_the_sequences_the_loader_yields(corpus, cache_dir):
    """text_bytes(start, stop) = token bytes of exactly the training sequences of those global samples, also from
    an offset and across an RNG block boundary."""
    n = BLOCK + 40
    dm = _dm(corpus, cache_dir, seed=5, num_samples=n, cfg={"micro_batch_size": 4})
    seen = torch.cat(_batches(dm))
    assert len(seen) == n
    tb = dm.token_bytes
    assert dm.text_bytes(0, n) == int(tb[seen].sum())
    assert dm.text_bytes(BLOCK - 8, n) == int(tb[seen[BLOCK - 8 :]].sum()) > 0
    assert dm.text_bytes(7, 7) == 0


def test_data_seed_picks_each_stages_stream(expanded_tokenizer, cache_dir, tmp_path):
    """``data.seed`` reaches the stage's data module (it once had no effect): the same value gives the same sample
    order, another value another order; each stage still draws its own stream."""
    from test_train import compose_cfg

    from eeve.training.stages import stage_datamodule

    def order(number: int, *overrides: str) -> np.ndarray:
        dm = stage_datamodule(
            compose_cfg(tmp_path, expanded_tokenizer, cache_dir, *overrides), number, expanded_tokenizer
        )
        dm.setup("fit")
        return dm.stream.flat_indices(0, 256)

    a = order(1, "data.seed=0")
    assert np.array_equal(a, order(1, "data.seed=0"))
    assert not np.array_equal(a, order(1, "data.seed=1"))
    assert not np.array_equal(a, order(2, "data.seed=0"))
