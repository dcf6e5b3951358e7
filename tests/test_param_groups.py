"""eeve.model.split: split vocabulary, exact freezing under AdamW weight decay, equivalence with the HF model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from eeve.cli import CONF_DIR
from eeve.config import GROUPS
from eeve.errors import SplitError
from eeve.model.split import SplitEmbedding, SplitLMHead, merge_split_state_dict, merge_vocab, split_vocab
from eeve.training.groups import group_of, group_parameters, set_trainable

# What each stage trains, read from the stage configs themselves (conf/stage/<N>.yaml).
STAGE_GROUPS = {n: tuple(OmegaConf.load(CONF_DIR / "stage" / f"{n}.yaml").trainable) for n in range(1, 8)}


def trainable_parameters(model):
    return [p for p in model.parameters() if p.requires_grad]


BASE, V = 48, 64


def tiny_model(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (2, 12), generator=g)
    ids[:, ::3] = torch.randint(BASE, V, ids[:, ::3].shape, generator=g)  # plenty of new tokens
    ids[:, 1::3] = torch.randint(0, BASE, ids[:, 1::3].shape, generator=g)
    return ids


def loss_fn(model, ids):
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    return model.lm_head(hidden, ids[:, 1:])[0]


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_stage(model, stage, steps=3):
    counts = set_trainable(model, STAGE_GROUPS[stage])
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-2, weight_decay=0.1)  # fresh optimizer per stage
    for k in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch(k)).backward()
        opt.step()
    return counts, opt


@pytest.mark.slow
def test_every_stage_freezes_exactly_and_trains_its_groups():
    model = split_vocab(tiny_model(), BASE)
    # every stage, then replays where the previous stage trained rows that are now frozen (3 -> 2, 6 -> 7, 5 -> 1)
    for stage in [1, 2, 3, 4, 5, 6, 7, 3, 2, 6, 7, 5, 1]:
        before = snapshot(model)
        counts, opt = run_stage(model, stage)
        groups = set(STAGE_GROUPS[stage])
        assert {g for g, n in counts.items() if n} == groups
        for n, p in model.named_parameters():
            g = group_of(n)
            if g in groups:
                assert p.requires_grad and not torch.equal(p, before[n]), f"stage {stage}: {n} did not train"
            else:
                assert not p.requires_grad and torch.equal(p, before[n]), f"stage {stage}: frozen {n} moved"
        # optimizer state exists only for trainable tensors: exp_avg + exp_avg_sq = 2 x trainable x 4 bytes
        state_bytes = sum(
            s[k].numel() * s[k].element_size() for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq")
        )
        assert state_bytes == 2 * sum(counts.values()) * 4
        assert all(p.requires_grad for p in opt.state)


def test_group_counts_and_names():
    model = split_vocab(tiny_model(), BASE)
    gp = group_parameters(model)
    H = 32
    assert sum(p.numel() for p in gp["old_input"]) == BASE * H
    assert sum(p.numel() for p in gp["new_input"]) == (V - BASE) * H
    assert sum(p.numel() for p in gp["old_output"]) == BASE * H
    assert sum(p.numel() for p in gp["new_output"]) == (V - BASE) * H
    assert sum(len(v) for v in gp.values()) == len(list(model.parameters()))
    ids = {id(p): g for g, ps in gp.items() for p in ps}
    for n, p in model.named_parameters():
        assert group_of(n) == ids[id(p)]
    assert group_of("model._checkpoint_wrapped_module.embed_tokens.new.weight") == "new_input"
    assert group_of("_orig_mod.lm_head.old.weight") == "old_output"
    assert group_of("model.layers.0.self_attn.q_proj.weight") == "transformer"
    assert group_of("model.norm.weight") == "transformer"
    with pytest.raises(SplitError):
        group_of("model.embed_tokens.weight")
    with pytest.raises(SplitError):
        set_trainable(model, ["embeddings"])
    with pytest.raises(SplitError):
        set_trainable(tiny_model(), ["new_input"])  # unsplit


def test_split_forward_and_fused_losses_match_hf():
    ref = tiny_model(1)
    model = split_vocab(tiny_model(1), BASE)
    assert isinstance(model.model.embed_tokens, SplitEmbedding) and isinstance(model.lm_head, SplitLMHead)
    ids = batch(5)
    with torch.no_grad():
        a = ref(input_ids=ids).logits
        b = model(input_ids=ids).logits
        torch.testing.assert_close(b, a)
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        targets = ids[:, 1:].clone()
        targets[0, :3] = -100
        ours = model.lm_head(hidden, targets)[1]
        full = F.cross_entropy(
            a[:, :-1].float().reshape(-1, V), targets.reshape(-1), reduction="none", ignore_index=-100
        ).view_as(targets)
        torch.testing.assert_close(ours, full)
        assert torch.all(ours[0, :3] == 0)
        # the HF labels path works unchanged too
        lab = model(input_ids=ids, labels=ids).loss
        torch.testing.assert_close(lab, ref(input_ids=ids, labels=ids).loss)


def test_merge_round_trip():
    ref = tiny_model(2)
    model = split_vocab(tiny_model(2), BASE)
    sd = merge_split_state_dict(model.state_dict())
    assert set(sd) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(sd[k], v), k
    with pytest.raises(SplitError):
        merge_split_state_dict({"model.embed_tokens.old.weight": torch.zeros(2, 2)})
    merge_vocab(model)
    assert type(model.model.embed_tokens) is torch.nn.Embedding and type(model.lm_head) is torch.nn.Linear
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert split_vocab(split_vocab(model, BASE), BASE) is model  # idempotent


def test_groups_constant():
    assert GROUPS == ("old_input", "new_input", "old_output", "new_output", "transformer")
    assert STAGE_GROUPS[6] == GROUPS and STAGE_GROUPS[7] == ("transformer",)


def test_negative_control_hook_freezing_moves_rows():
    """The trap the split avoids: zeroing grad[:BASE] with a hook on one matrix still moves old rows (AdamW decay)."""
    model = tiny_model(3)
    for p in model.parameters():
        p.requires_grad_(False)
    W = model.model.embed_tokens.weight
    W.requires_grad_(True)
    W.register_hook(lambda g: torch.cat([torch.zeros_like(g[:BASE]), g[BASE:]]))
    old = W.detach()[:BASE].clone()
    opt = torch.optim.AdamW([W], lr=1e-2, weight_decay=0.1)
    for k in range(3):
        opt.zero_grad()
        model(input_ids=batch(k), labels=batch(k)).loss.backward()
        opt.step()
    assert not torch.equal(W.detach()[:BASE], old)


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=25, deadline=None)
@given(base=st.integers(1, 15), extra=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_split_modules_match_plain_ops(base, extra, seed):
    """Property: for any split point, SplitEmbedding == F.embedding and the fused loss == F.cross_entropy,
    including the boundary ids 0, base-1, base, V-1 and ignored targets."""
    g = torch.Generator().manual_seed(seed)
    V_, H = base + extra, 8
    W, O = torch.randn(V_, H, generator=g), torch.randn(V_, H, generator=g)
    from eeve.model.split import _embedding, _linear

    emb = SplitEmbedding(_embedding(W[:base].clone()), _embedding(W[base:].clone()))
    head = SplitLMHead(_linear(O[:base].clone()), _linear(O[base:].clone()))
    ids = torch.cat([torch.tensor([0, base - 1, base, V_ - 1]), torch.randint(0, V_, (12,), generator=g)])
    torch.testing.assert_close(emb(ids), F.embedding(ids, W))
    h = torch.randn(16, H, generator=g)
    torch.testing.assert_close(head(h), h @ O.T)
    t = ids.clone()
    t[5] = -100
    ref = F.cross_entropy(h @ O.T, t, reduction="none", ignore_index=-100)
    torch.testing.assert_close(head(h, t)[1], ref)


_FSDP_SCRIPT = r"""
import os, socket, sys, torch, torch.distributed as dist
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM
from omegaconf import OmegaConf
from eeve.cli import CONF_DIR
from eeve.model.split import merge_split_state_dict, split_vocab
from eeve.training.groups import group_of, set_trainable
STAGE_GROUPS = {n: tuple(OmegaConf.load(CONF_DIR / "stage" / f"{n}.yaml").trainable) for n in range(1, 8)}
trainable_parameters = lambda m: [p for p in m.parameters() if p.requires_grad]
torch.manual_seed(0)
m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2))
split_vocab(m, 48)
mesh = init_device_mesh("cpu", (1,))
import types
from eeve.training.distributed import shard_model
from eeve.training.module import _eeve_losses
m.eeve_losses = types.MethodType(_eeve_losses, m)  # what EEVEModule.configure_model does
shard_model(m, mesh, torch.float32)
for stage in (3, 2):  # 3 then 2 with a fresh optimizer: new_input rows trained, then frozen
    counts = set_trainable(m, STAGE_GROUPS[stage])
    full = lambda p: p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach()  # noqa: E731
    plain = [n for n, p in m.named_parameters() if not hasattr(p, "full_tensor")]
    if plain:
        print("unsharded at stage start:", plain)
    before = {n: full(p).clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW(trainable_parameters(m), lr=1e-2, weight_decay=0.1)
    for k in range(2):
        ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(k))
        opt.zero_grad()
        m.eeve_losses(ids[:, :-1], ids[:, 1:], True)[0].backward()
        opt.step()
    for n, p in m.named_parameters():
        moved = not torch.equal(full(p), before[n])
        assert moved == (group_of(n) in STAGE_GROUPS[stage]), (stage, n, moved)
sd = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
merged = merge_split_state_dict(sd)
assert merged["model.embed_tokens.weight"].shape == (64, 32) and merged["lm_head.weight"].shape == (64, 32)
dist.destroy_process_group()
print("FSDP2-OK")
"""


@pytest.mark.slow
def test_fsdp2_exact_freezing_subprocess():
    """FSDP2 (fully_shard, DTensor params, gloo, world size 1): same exact freezing, full state dict merges."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FSDP_SCRIPT], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "FSDP2-OK" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("chunk_elements", [1 << 25, 7 * 50])  # one chunk; many ragged chunks
@pytest.mark.parametrize("trainable", [(True, True, True), (False, True, False), (True, False, True)])
def test_fused_head_gradients_equal_autograd_reference(chunk_elements, trainable):
    """SplitHeadCrossEntropy (fused, chunked, gradients computed in forward) == autograd through
    F.cross_entropy on the concatenated logits, for the loss, the per-token losses and every gradient asked
    for; ignored targets contribute nothing; frozen blocks get no gradient at all."""
    from eeve.model.split import SplitLMHead

    g = torch.Generator().manual_seed(0)
    H, base, extra, n = 16, 40, 10, 23
    old, new = torch.nn.Linear(H, base, bias=False), torch.nn.Linear(H, extra, bias=False)
    with torch.no_grad():
        old.weight.copy_(torch.randn(base, H, generator=g))
        new.weight.copy_(torch.randn(extra, H, generator=g))
    head = SplitLMHead(old, new)
    head.chunk_elements = chunk_elements
    need_h, need_old, need_new = trainable
    old.weight.requires_grad_(need_old)
    new.weight.requires_grad_(need_new)
    h = torch.randn(1, n, H, generator=g).requires_grad_(need_h)
    t = torch.randint(0, base + extra, (1, n), generator=g)
    t[0, 3] = -100
    t[0, 5] = base  # first new id
    t[0, 6] = base - 1  # last old id
    loss, per_token = head(h, t)
    grads = torch.autograd.grad(
        loss, [x for x, w in ((h, need_h), (old.weight, need_old), (new.weight, need_new)) if w]
    )

    h2 = h.detach().clone().requires_grad_(need_h)
    wo, wn = old.weight.detach().clone().requires_grad_(need_old), new.weight.detach().clone().requires_grad_(need_new)
    logits = torch.cat([h2 @ wo.T, h2 @ wn.T], -1)
    ref = F.cross_entropy(logits.view(-1, base + extra), t.view(-1), ignore_index=-100)
    ref_tok = F.cross_entropy(logits.view(-1, base + extra), t.view(-1), ignore_index=-100, reduction="none")
    ref_grads = torch.autograd.grad(ref, [x for x, w in ((h2, need_h), (wo, need_old), (wn, need_new)) if w])
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(per_token.view(-1), ref_tok)
    assert not per_token.requires_grad
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
