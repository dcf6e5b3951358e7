"""Init methods that use the base model as teacher (mass_first_piece, distill), on the tiny model and the demo's
real expanded tokenizer and text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_train import compose_cfg


@pytest.fixture(scope="module")
def setup(expanded_tokenizer, tmp_path_factory):
    from eeve.model.expand import read_expansion
    from eeve.model.init_data import init_inputs

    cache = tmp_path_factory.mktemp("cache")
    cfg = compose_cfg(
        tmp_path_factory.mktemp("run"),
        expanded_tokenizer,
        cache,
        "init=distill",
        "init_options.documents=64",
        "init_options.teacher_tokens=1024",
        "init_options.head_epochs=3",
        "init_options.distill_steps=2",
        "init_options.distill_seq_len=32",
    )
    exp = read_expansion(expanded_tokenizer)
    return cfg, exp, init_inputs(cfg, expanded_tokenizer, exp)["data"]


def expand(cfg, exp, data, init, tok_dir, attention=None):
    from tokenizers import Tokenizer

    from eeve.model.expand import expand_model
    from eeve.model.load import load_base_model

    base = load_base_model(cfg.model, seed=cfg.seed)
    if attention:
        base.set_attn_implementation(attention)
    old_in = base.get_input_embeddings().weight.detach().clone()
    old_out = base.get_output_embeddings().weight.detach().clone()
    tok = Tokenizer.from_file(str(tok_dir / "base_tokenizer" / "tokenizer.json"))
    model, summary = expand_model(
        base,
        tok,
        exp["new_tokens"],
        exp["base_vocab_size"],
        init,
        0,
        vocab_size=exp["vocab_size"],
        return_summary=True,
        data=data,
    )
    return model, summary, old_in, old_out, tok


def test_aligned_positions_cover_the_same_bytes(setup):
    from eeve.model.teacher import build_chunks

    _, _, data = setup
    bb, eb = data.base.token_bytes(), data.expanded.token_bytes()
    chunks = build_chunks(data.texts[:40], data.base, data.expanded, 128)
    n_korean_new = 0
    for c in chunks:
        assert c.base_pos and len(c.base_pos) == len(c.exp_pos)
        cb, ce = np.cumsum(bb[c.base_ids]), np.cumsum(eb[c.exp_ids])
        assert all(cb[j] == ce[i] for j, i in zip(c.base_pos, c.exp_pos))
        assert cb[-1] == ce[-1]  # a chunk ends on a boundary of both
        n_korean_new += sum(1 for i in c.exp_pos if i + 1 < len(c.exp_ids) and c.exp_ids[i + 1] >= data.base.vocab_size)
    assert n_korean_new > 50  # new tokens follow aligned positions: the teacher sees the contexts that matter


def test_mass_first_piece_splits_the_first_piece_by_frequency(setup, expanded_tokenizer):
    from eeve.model.init import subword_plan

    cfg, exp, data = setup
    model, summary, old_in, old_out, tok = expand(cfg, exp, data, "mass_first_piece", expanded_tokenizer)
    base = exp["base_vocab_size"]
    W = model.get_output_embeddings().weight.detach()
    assert torch.equal(W[:base], old_out) and torch.equal(model.get_input_embeddings().weight[:base], old_in)
    st = summary.method_stats
    b = st["family_offset"]
    # h·m ≈ 1 is a least-squares fit: close on a real model (0.999 ± 0.022 on SmolLM2), looser on a random one
    assert st["aligned_positions"] > 100 and 0.5 < st["shift_dot_mean"] < 1.1
    plan = subword_plan(tok, [(t["id"], t["token"]) for t in exp["new_tokens"]])
    fams: dict[int, list[int]] = {}
    for p in plan:
        if p["output_id"] is not None:
            fams.setdefault(p["output_id"], []).append(p["id"])
    # every new output row = its first piece's row + c_t * m, one direction m for all tokens
    deltas = torch.stack([W[t] - old_out[p] for p, ts in fams.items() for t in ts])
    m = deltas[deltas.norm(dim=1).argmax()]
    coef = deltas @ m / (m @ m)
    torch.testing.assert_close(deltas, coef[:, None] * m[None], rtol=1e-4, atol=1e-5)
    # c_t = alpha * (log q_t + b) with q_t = t's add-one frequency share within its family (the family's new
    # tokens hold e^b times p's probability), alpha = 1 / (m's scale as picked above)
    logq = []
    for p, ts in fams.items():
        f = torch.tensor([data.frequencies.get(t, 0) + 1.0 for t in ts], dtype=torch.float64)
        logq.append((f / f.sum()).log())
    logq = torch.cat(logq)
    A = torch.stack([logq, torch.ones_like(logq)], 1)
    alpha, alpha_b = torch.linalg.lstsq(A, coef.double()[:, None]).solution[:, 0].tolist()
    torch.testing.assert_close(coef.double(), alpha * logq + alpha_b, rtol=0, atol=1e-4 * abs(alpha))
    assert alpha_b / alpha == pytest.approx(b, abs=1e-3)
    # the largest family is split: its members no longer share one logit
    big = max(fams.values(), key=len)
    assert len(big) > 5 and len({round(float(W[t] @ m), 3) for t in big}) > 1


def test_distill_trains_only_new_rows_and_lowers_the_teachers_loss(setup, expanded_tokenizer):
    cfg, exp, data = setup
    model, summary, old_in, old_out, _ = expand(cfg, exp, data, "distill", expanded_tokenizer)
    base = exp["base_vocab_size"]
    assert torch.equal(model.get_output_embeddings().weight[:base], old_out)
    assert torch.equal(model.get_input_embeddings().weight[:base], old_in)
    assert all(p.requires_grad for p in model.parameters())  # the backbone is handed back trainable
    st = summary.method_stats
    assert st["head_fit_heldout_nats_after"] < st["head_fit_heldout_nats_before"]
    assert st["distill_steps"] == 2 and math.isfinite(st["distill_ce_last"]) and math.isfinite(st["distill_kl_last"])


@pytest.mark.parametrize("init", ["mass_first_piece", "distill"])
def test_init_flops_match_torch_counter(setup, expanded_tokenizer, init):
    """The init's passes over the base model (charged to a FLOP budget, eeve.training.flops.init_flops) against
    torch's FlopCounterMode around the whole expansion (attention eager: the counter does not see CPU SDPA). The
    plan made before the run (the budget's stand-in) is an upper bound of what ran."""
    from torch.utils.flop_counter import FlopCounterMode

    from eeve.model.init import get_init
    from eeve.training.flops import init_flops

    cfg, exp, data = setup
    with FlopCounterMode(display=False) as counter:
        model, summary, *_ = expand(cfg, exp, data, init, expanded_tokenizer, attention="eager")
    counted = counter.get_total_flops()
    base, vocab = exp["base_vocab_size"], exp["vocab_size"]
    formula = init_flops(model.config, base, vocab, summary.passes)
    assert abs(formula / counted - 1) < 0.10, (counted, formula, summary.passes)
    assert abs(formula / counted - 1) < 0.001, (counted, formula)  # measured: equal (1.98483e9, 6.68802e9)
    planned = get_init(init).planned_passes(cfg.init_options, model.config.hidden_size, base, vocab - base)
    assert formula <= init_flops(model.config, base, vocab, planned) < 3 * formula
