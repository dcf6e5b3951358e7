"""eeve.model.expand: loading, untying, vocab checks and the subword initialisation (checked by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from eeve.config import INITS, ModelConfig, to_object, to_train_config
from eeve.errors import ConfigError, ExpansionError
from eeve.model.expand import expand_model, untie_embeddings
from eeve.model.init import INIT_METHODS, InitMethod, register, subword_plan
from eeve.model.load import load_base_model, torch_dtype
from eeve.tokenizer.base import bpe_pieces

ROOT = Path(__file__).resolve().parents[1]
SENTS = [
    "한국어 문장을 토큰화합니다.",
    "안녕하세요 여러분 반갑습니다.",
    "Hello world, this is a test.",
    "한국 사람은 한국어를 합니다.",
    "the quick brown fox",
] * 3


def make_base_tokenizer():
    """Small real SentencePiece-style BPE: Metaspace ▁, byte fallback, <0x00>..<0xFF> at ids 3..258."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(SENTS, trainers.BpeTrainer(vocab_size=330, special_tokens=specials, show_progress=False))
    assert tok.get_vocab_size() == 330
    return tok


def tiny_cfg(vocab: int, tie: bool = False) -> dict:
    cfg = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())
    cfg["config"].update(vocab_size=vocab, tie_word_embeddings=tie)
    return cfg


@pytest.fixture(scope="module")
def base_tok():
    return make_base_tokenizer()


# new tokens: leading bare ▁ skipped; plain multi-piece; ▁ + a character missing from the base (bytes);
# a token whose first piece is a merged "▁한국" (not skipped) followed by bytes.
NEW = ["▁반갑", "국어를", "▁곰", "▁한국인"]
EXPECTED = {  # (pieces of the bare BPE model, literally; input pieces after the rule; output piece)
    "▁반갑": (["▁", "반", "갑"], ["반", "갑"], "반"),
    "국어를": (["국", "어", "를"], ["국", "어", "를"], "국"),
    "▁곰": (["▁", "<0xEA>", "<0xB3>", "<0xB0>"], ["<0xEA>", "<0xB3>", "<0xB0>"], "<0xEA>"),
    "▁한국인": (["▁한국", "<0xEC>", "<0x9D>", "<0xB8>"], ["▁한국", "<0xEC>", "<0x9D>", "<0xB8>"], "▁한국"),
}


def test_bare_pieces_literal(base_tok):
    for t, (pieces, used, out) in EXPECTED.items():
        assert bpe_pieces(base_tok, t) == pieces
    plan = subword_plan(base_tok, [(330 + i, t) for i, t in enumerate(NEW)])
    for p in plan:
        _, used, out = EXPECTED[p["token"]]
        assert p["pieces"] == used
        assert p["output_id"] == base_tok.token_to_id(out)
    # the base tokenizer itself is untouched; special-token text inside a token is not matched
    assert base_tok.pre_tokenizer is not None
    assert bpe_pieces(base_tok, "<s>한") == ["<0x3C>", "s", "<0x3E>", "한"]


def test_mean_subwords_hand_computed(base_tok):
    model = load_base_model(tiny_cfg(330), seed=0)
    E0 = model.get_input_embeddings().weight.detach().clone()
    O0 = model.get_output_embeddings().weight.detach().clone()
    model, s = expand_model(model, base_tok, NEW, 330, init="mean_subwords", seed=0, return_summary=True)
    E, O = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert E.shape[0] == O.shape[0] == 334 == model.config.vocab_size
    assert torch.equal(E[:330], E0) and torch.equal(O[:330], O0)
    v = base_tok.get_vocab()
    # by hand, one token at a time
    r = lambda W, *toks: torch.stack([W[v[t]] for t in toks])  # noqa: E731
    torch.testing.assert_close(E[330], (E0[v["반"]] + E0[v["갑"]]) / 2)
    torch.testing.assert_close(O[330], O0[v["반"]])
    torch.testing.assert_close(E[331], (E0[v["국"]] + E0[v["어"]] + E0[v["를"]]) / 3)
    torch.testing.assert_close(O[331], O0[v["국"]])
    torch.testing.assert_close(E[332], r(E0, "<0xEA>", "<0xB3>", "<0xB0>").mean(0))
    assert v["<0xEA>"] == 3 + 0xEA
    torch.testing.assert_close(O[332], O0[3 + 0xEA])
    torch.testing.assert_close(E[333], (E0[v["▁한국"]] + E0[3 + 0xEC] + E0[3 + 0x9D] + E0[3 + 0xB8]) / 4)
    torch.testing.assert_close(O[333], O0[v["▁한국"]])
    assert (s.n_new, s.n_leading_space_skipped, s.n_with_byte_pieces, s.n_single_piece) == (4, 2, 2, 0)
    assert s.mean_pieces == pytest.approx((2 + 3 + 3 + 4) / 4)
    # forward works on new ids
    out = model(torch.tensor([[1, 330, 331, 332, 333]])).logits
    assert out.shape == (1, 5, 334)


def test_config_names_every_init_method_and_no_other():
    """The torch-free config checks ``init=`` against eeve.config.INITS; the registry is the same list."""
    assert list(INIT_METHODS) == list(INITS)

    class Unlisted(InitMethod):
        name = "not_in_config"

    with pytest.raises(ExpansionError, match="not in eeve.config.INITS"):
        register(Unlisted)
    assert "not_in_config" not in INIT_METHODS
    with pytest.raises(ConfigError, match="init=nope is unknown: choose one of mean, mean_cov"):
        to_train_config(
            {"data": {"sources": {"x": {"paths": ["a.txt"], "ratio": 1.0}}}, "stages": ["1"], "init": "nope"}
        )


@pytest.mark.parametrize("init", ["mean", "mean_cov", "random"])
def test_other_inits(base_tok, init):
    model = load_base_model(tiny_cfg(330), seed=0)
    E0 = model.get_input_embeddings().weight.detach().clone()
    expand_model(model, base_tok, {330: "▁반갑", 331: "국어를"}, 330, init=init, seed=1)
    E = model.get_input_embeddings().weight.detach()
    assert torch.equal(E[:330], E0)
    if init == "mean":
        torch.testing.assert_close(E[330], E0.mean(0))
    elif init == "mean_cov":
        assert (E[330:] - E0.mean(0)).abs().max() < 1e-3  # transformers' 1e-9 * covariance
    else:
        assert 0.005 < E[330:].std() < 0.05 and not torch.equal(E[330], E[331])


def test_tied_model_untied_and_stays_untied(base_tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model = load_base_model(tiny_cfg(330, tie=True), seed=0)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    expand_model(model, base_tok, NEW, 330)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.data_ptr() != head.data_ptr() and model.config.tie_word_embeddings is False
    with torch.no_grad():
        head[330:] += 1.0  # make them differ so tying on load would be visible
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert back.config.tie_word_embeddings is False
    assert back.get_output_embeddings().weight.data_ptr() != back.get_input_embeddings().weight.data_ptr()
    assert torch.equal(back.get_output_embeddings().weight, head.detach())
    assert torch.equal(back.get_input_embeddings().weight, emb.detach())


def test_untie_is_noop_on_untied(base_tok):
    model = load_base_model(tiny_cfg(330), seed=0)
    assert untie_embeddings(model) is False


def test_vocab_mismatch_error(base_tok):
    model = load_base_model(tiny_cfg(400), seed=0)
    with pytest.raises(ExpansionError) as e:
        expand_model(model, base_tok, NEW, 330)
    msg = str(e.value)
    assert "400" in msg and "330" in msg and "\n" not in msg and "tokenizer" in msg


def test_tiny_yaml_and_seed():
    cfg = to_object(ModelConfig, yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text()))
    assert cfg.untie_embeddings and not cfg.trust_remote_code and cfg.name_or_path is None
    a, b = load_base_model(cfg, seed=3), load_base_model(cfg, seed=3)
    assert a.config.vocab_size == 32000 and a.config.tie_word_embeddings is False
    assert sum(p.numel() for p in a.parameters()) < 5_000_000
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    solar = to_object(ModelConfig, yaml.safe_load((ROOT / "conf/model/solar.yaml").read_text()))
    assert torch_dtype(solar.dtype) == torch.bfloat16 and solar.config["num_hidden_layers"] == 48


def test_expansion_json_list_format(base_tok):
    model = load_base_model(tiny_cfg(330), seed=0)
    items = [{"id": 330 + i, "token": t, "frequency": 7} for i, t in enumerate(NEW)]
    _, s = expand_model(model, base_tok, items, 330, vocab_size=336, return_summary=True)
    assert s.n_padding == 2 and model.config.vocab_size == 336
    E = model.get_input_embeddings().weight
    torch.testing.assert_close(E[335], E[:330].mean(0))
