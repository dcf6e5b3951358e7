"""The split training model computes what the HF model computes, on architectures other than Llama (debug size):
Gemma 3 (embedding scaled by sqrt(hidden)), Gemma 2 (scaled embedding + final logit soft-capping), Qwen 2; and the
equivalence self-check names the module when something is dropped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eeve.errors import SplitError
from eeve.model import equivalence
from eeve.model.expand import untie_embeddings
from eeve.model.fused_ce import SplitHeadCrossEntropy
from eeve.model.split import merge_vocab, split_vocab, transform_logits

V, BASE = 96, 80
SMALL = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=64,
)


def gemma3(**kw):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return Gemma3ForCausalLM(Gemma3TextConfig(**{**SMALL, "head_dim": 16, **kw}))


def gemma2(**kw):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(**{**SMALL, "head_dim": 16, "final_logit_softcapping": 3.0, **kw}))


def qwen2(**kw):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**{**SMALL, "tie_word_embeddings": False, **kw}))


ARCHS = {"gemma3": gemma3, "gemma2": gemma2, "qwen2": qwen2}


def build(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model = ARCHS[arch]().eval()
    untie_embeddings(model)
    with torch.no_grad():  # pretend the last rows are "new": give them their own values
        model.get_output_embeddings().weight[BASE:] *= 3
    return model


def ids(seed=0, new=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(BASE if new else 0, V if new else BASE, (2, 10), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_split_training_path_matches_the_hf_model(arch):
    model = build(arch)
    x = ids()
    ref = equivalence.reference(model, x, BASE)
    full = model(input_ids=ids(1, new=True)).logits
    split_vocab(model, BASE)
    assert equivalence.check(model, ref) < 1e-5
    # all rows, new ones included: HF's forward through the split modules is unchanged
    torch.testing.assert_close(model(input_ids=ids(1, new=True)).logits, full, rtol=1e-5, atol=1e-5)
    # the fused training loss equals cross-entropy of the model's own logits (soft-capped for Gemma 2)
    y = ids(2, new=True) * 0 + torch.arange(10) * 9 % V
    hidden = model.model(input_ids=x).last_hidden_state
    fused, _ = model.lm_head(hidden, y)
    torch.testing.assert_close(
        fused,
        nn.functional.cross_entropy(model(input_ids=x).logits.reshape(-1, V), y.reshape(-1)),
        rtol=1e-5,
        atol=1e-5,
    )
    # merging back restores the original module classes (a Gemma embedding keeps its scaling)
    merged = merge_vocab(model)
    assert type(merged.get_input_embeddings()).__name__ == ref.embedding_class
    torch.testing.assert_close(merged(input_ids=ids(1, new=True)).logits, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_expanded_then_split_model_computes_what_the_base_computes(arch):
    """The path stage 1 takes (eeve.training.stages.build_stage_model): expand the base to the new vocabulary,
    then split it; on text without new tokens it must compute what the base computes (an expansion that swapped
    Gemma 3's scaled embedding for a plain lookup failed this by 0.96)."""
    from test_expansion import NEW, make_base_tokenizer

    from eeve.model.expand import expand_model

    base_tok = make_base_tokenizer()
    n = base_tok.get_vocab_size()
    torch.manual_seed(0)
    model = ARCHS[arch](vocab_size=n).eval()
    cls = type(model.get_input_embeddings())
    probe = equivalence.probe_ids(base_tok, n)
    ref = equivalence.reference(model, probe, n)
    expand_model(model, base_tok, NEW, n, init="mean_subwords")
    assert type(model.get_input_embeddings()) is cls  # the resized embedding keeps its class (and its scale)
    split_vocab(model, n)
    assert equivalence.check(model, ref, "stage 1") < 1e-5


def test_dropped_embedding_scale_is_named():
    model = build("gemma3")
    ref = equivalence.reference(model, ids(), BASE)
    split_vocab(model, BASE)
    assert model.get_input_embeddings().scale == pytest.approx(32**0.5)
    model.get_input_embeddings().scale = 1.0  # what the split did before: a plain lookup
    with pytest.raises(SplitError, match=r"embed_tokens \(Gemma3TextScaledWordEmbedding\) does more than a lookup"):
        equivalence.check(model, ref, "stage 1")


def test_dropped_soft_cap_is_named():
    model = build("gemma2")
    ref = equivalence.reference(model, ids(), BASE)
    split_vocab(model, BASE)
    assert model.get_output_embeddings().softcap == 3.0
    model.get_output_embeddings().softcap = None
    with pytest.raises(SplitError, match=r"Gemma2ForCausalLM.forward transforms the head's output"):
        equivalence.check(model, ref)


class OffsetEmbedding(nn.Embedding):
    """An embedding whose forward is not a lookup times a constant."""

    def forward(self, input_ids):
        return super().forward(input_ids) + 1.0


def test_embedding_that_does_more_than_a_lookup_is_refused():
    model = build("qwen2")
    old = model.get_input_embeddings()
    emb = OffsetEmbedding(V, 32)
    emb.weight = old.weight
    model.set_input_embeddings(emb)
    with pytest.raises(SplitError, match=r"OffsetEmbedding\) does more than a lookup"):
        split_vocab(model, BASE)


@pytest.mark.parametrize("scale,cap", [(1.0, None), (0.25, None), (1.0, 2.0), (2.0, 3.0)])
def test_fused_loss_gradients_with_scale_and_soft_cap(scale, cap):
    torch.manual_seed(0)
    h = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    wo = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    wn = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 10, (10,))
    t[3] = -100
    loss, _ = SplitHeadCrossEntropy.apply(h, wo, wn, t, 3, -100, (True, True, True), scale, cap)
    got = torch.autograd.grad(loss, (h, wo, wn))
    ref = nn.functional.cross_entropy(transform_logits(torch.cat([h @ wo.T, h @ wn.T], -1), scale, cap), t)
    want = torch.autograd.grad(ref, (h, wo, wn))
    assert abs(loss.item() - ref.item()) < 1e-5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
