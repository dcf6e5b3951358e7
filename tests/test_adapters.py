"""LoRA / QLoRA adapters for the transformer group: exact freezing next to split-row training, the merged export
as a plain HF model, the PEFT folder, FSDP2 on two CPU ranks, and the one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import FAST, compose_cfg, export_state, run_cli

from eeve.config import LoraSettings, StageConfig, to_train_config
from eeve.errors import ConfigError
from eeve.model.split import merge_split_state_dict, split_vocab
from eeve.training.adapters import adapted_state_dict, attach_adapter, merge_adapter, require_qlora
from eeve.training.groups import ADAPTER_GROUP, group_of, group_parameters, set_trainable

BASE, V = 48, 64
STAGE6 = ["old_input", "new_input", "old_output", "new_output", "transformer"]
LORA = LoraSettings(rank=4, alpha=8.0)


def tiny_config(hidden=32):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=V,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )


def tiny_split(seed=0, hidden=32):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return split_vocab(LlamaForCausalLM(tiny_config(hidden)), BASE)


def batch(seed=0, n=2, t=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, t), generator=g)
    ids[:, ::3] = torch.randint(BASE, V, ids[:, ::3].shape, generator=g)  # plenty of new tokens
    return ids


def train(model, groups, steps=3, device="cpu"):
    counts = set_trainable(model, groups)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for k in range(steps):
        ids = batch(k).to(device)
        hidden = model.model(input_ids=ids[:, :-1]).last_hidden_state
        loss = model.lm_head(hidden, ids[:, 1:])[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return counts, opt


@pytest.mark.parametrize("groups", [STAGE6, ["transformer"], ["new_input", "transformer"]])
def test_lora_exact_freezing_and_optimizer_state(groups):
    """Weight decay 0.1: the base weights of adapted layers (and every other frozen tensor) stay bit-identical;
    only the adapter and the stage's row groups move; AdamW state is exactly theirs."""
    model = attach_adapter(tiny_split(), StageConfig(number=6, trainable=groups, adapter="lora", lora=LORA), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    counts, opt = train(model, groups)
    trained = {g for g in groups if g != "transformer"} | {ADAPTER_GROUP}
    assert {g for g, n in counts.items() if n} == trained and counts["transformer"] == 0
    n_base_layer = 0
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (group_of(n) in trained), f"{n} ({group_of(n)}) {'moved' if moved else 'did not move'}"
        n_base_layer += ".base_layer." in n
    assert n_base_layer == 2 * 7  # every q/k/v/o/gate/up/down of both layers is adapted
    state_bytes = sum(s[k].numel() * s[k].element_size() for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert state_bytes == 8 * sum(counts.values())
    assert counts[ADAPTER_GROUP] == sum(p.numel() for p in group_parameters(model)[ADAPTER_GROUP])


def test_merged_state_dict_is_a_plain_model_with_the_same_logits():
    from transformers import LlamaForCausalLM

    model = attach_adapter(tiny_split(), StageConfig(number=6, trainable=STAGE6, adapter="lora", lora=LORA), seed=0)
    train(model, STAGE6)
    model.eval()
    ids = batch(9, t=20)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    plain = LlamaForCausalLM(tiny_config()).eval()
    plain.load_state_dict(merge_split_state_dict(merge_adapter(adapted_state_dict(model), LORA)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)


def test_same_seed_same_adapter_and_bf16_base_gets_fp32_adapter():
    stage = StageConfig(number=7, trainable=["transformer"], adapter="lora", lora=LORA)
    lora_a, lora_b, lora_half = (
        {n: p for n, p in m.named_parameters() if ".lora_" in n}
        for m in (
            attach_adapter(tiny_split(), stage, seed=5),
            attach_adapter(tiny_split(), stage, seed=5),
            attach_adapter(tiny_split().to(torch.bfloat16), stage, seed=5),
        )
    )
    assert lora_a.keys() == lora_b.keys() and all(torch.equal(lora_a[n], lora_b[n]) for n in lora_a)
    assert lora_half.keys() == lora_a.keys() and all(p.dtype == torch.float32 for p in lora_half.values())
    # nothing outside the decoder layers is adapted: the split embedding and head stay as they are
    assert not [n for n in lora_a if ".layers." not in n]


def test_bad_adapter_settings_are_one_line_errors():
    base = {"data": {"sources": {"x": {"paths": ["a.txt"], "ratio": 1.0}}, "validation": {"en": {"paths": ["b.txt"]}}}}

    def cfg(**stage):
        return to_train_config({**base, "stage": {"number": 6, "trainable": STAGE6, **stage}})

    with pytest.raises(ConfigError, match="adapts the transformer group"):
        to_train_config({**base, "stage": {"number": 1, "trainable": ["new_input"], "adapter": "lora"}})
    with pytest.raises(ConfigError, match="unknown: choose one of none, lora, qlora"):
        cfg(adapter="dora")
    with pytest.raises(ConfigError, match="rank >= 1"):
        cfg(adapter="lora", lora={"rank": 0})
    with pytest.raises(ConfigError, match="qlora runs under trainer=default or trainer=ddp"):
        to_train_config(
            {**base, "stage": {"number": 6, "trainable": STAGE6, "adapter": "qlora"}, "trainer": {"strategy": "fsdp"}}
        )
    assert cfg(adapter="qlora").stage.adapter == "qlora"  # the settings are fine; this machine is asked apart
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as e:
            require_qlora()
        assert "needs a CUDA GPU" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="matches no linear layer"):
        attach_adapter(
            tiny_split(),
            StageConfig(number=6, trainable=STAGE6, adapter="lora", lora=LoraSettings(target_modules=["nope_proj"])),
            seed=0,
        )


def test_qlora_layers_on_cpu_freeze_exactly_and_merge_dequantized():
    """The QLoRA code path with bitsandbytes' CPU kernels (train.py itself refuses qlora without CUDA): the packed
    4-bit weights are bit-identical after training, and the merged export equals the adapted model."""
    pytest.importorskip("bitsandbytes")
    from transformers import LlamaForCausalLM

    stage = StageConfig(number=6, trainable=STAGE6, adapter="qlora", lora=LORA)
    model = attach_adapter(tiny_split(hidden=64), stage, seed=0, device="cpu")  # bnb's CPU blocks are 64 wide
    q = model.model.layers[0].self_attn.q_proj.get_base_layer()
    assert type(q).__name__ == "Linear4bit" and q.weight.dtype == torch.uint8
    packed = {n: t.clone() for n, t in model.state_dict().items() if ".base_layer." in n}
    train(model, STAGE6, steps=2)
    assert all(torch.equal(t, model.state_dict()[n]) for n, t in packed.items())
    ids = batch(9, t=20)
    # Left in train mode (dropout is 0): in eval mode bitsandbytes repacks CPU weights for bf16 kernels, and
    # packing back rounds the block scales to bf16 (a CPU-only shortcut of its inference path).
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    plain = LlamaForCausalLM(tiny_config(hidden=64)).eval()
    plain.load_state_dict(merge_split_state_dict(merge_adapter(adapted_state_dict(model), LORA)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ stages through Lightning

ADAPTED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.mark.slow
def test_lora_stages_6_and_7_freeze_exactly_and_export_plain_models(expanded_tokenizer, packed_cache, tmp_path):
    """stage=6 and stage=7 with stage.adapter=lora after stage 1: the groups each stage changed (fingerprints of
    the live model: base weights of adapted layers unchanged), the merged exports as plain HF models, and the PEFT
    folders, which on the stage's starting model give the stage's model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from eeve.training.stages import run_stage

    chain = ["stages=[1,6,7]", "stage.lora.rank=4", "stage.lora.alpha=8", "export.adapter=true"]
    expected = {1: ["new_input"], 6: ["adapter", "new_input", "new_output", "old_input", "old_output"], 7: ["adapter"]}
    for n in (1, 6, 7):
        cfg = compose_cfg(
            tmp_path, expanded_tokenizer, packed_cache, f"stage={n}", *chain, *(["stage.adapter=lora"] if n > 1 else [])
        )
        m = run_stage(cfg, n)
        assert m["groups_changed"] == expected[n], n
        assert m["trainable_parameters"].get("transformer", 0) == 0
    s1, s6, s7 = (export_state(tmp_path / f"stage{n}") for n in (1, 6, 7))
    assert s1.keys() == s6.keys() == s7.keys() and not [k for k in s7 if "lora" in k or "base_layer" in k]
    for k in s7:  # stage 7: only the merged (adapted) linear layers differ from stage 6's export
        assert torch.equal(s6[k], s7[k]) != k.endswith(tuple(f"{a}.weight" for a in ADAPTED)), k
    assert not torch.equal(s1["model.embed_tokens.weight"][:32000], s6["model.embed_tokens.weight"][:32000])

    ids = torch.tensor([[1, 32001, 500, 33000, 35000, 7, 32100, 2]])
    for n, prev, rows in ((6, 1, True), (7, 6, False)):
        folder = tmp_path / f"stage{n}" / "adapter"
        adapter = load_file(folder / "adapter_model.safetensors")
        assert ("base_model.model.lm_head.weight" in adapter) == rows  # the rows the stage trained ride along
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            tmp_path / f"stage{prev}"
        )
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / f"stage{n}").eval()
        assert type(plain) is LlamaForCausalLM and not hasattr(plain, "peft_config")
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / f"stage{prev}"), folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(ids).logits, peft(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lora_stage_on_two_fsdp_cpu_ranks_matches_one_process(expanded_tokenizer, packed_cache, tmp_path):
    """FSDP2 (gloo, 2 CPU processes x micro-batch 4, activation checkpointing) == 1 process x micro-batch 8, with
    LoRA on the transformer and all four row groups training in the same stage."""
    from eeve.training.stages import run_stage

    lora = ["stage.adapter=lora", "stage.lora.rank=4", "stage.lora.alpha=8", "export.adapter=true"]
    run_stage(compose_cfg(tmp_path / "init", expanded_tokenizer, packed_cache), 1)
    init = [f"init_from={tmp_path / 'init' / 'stage1'}"]
    single = run_stage(
        compose_cfg(
            tmp_path / "single", expanded_tokenizer, packed_cache, "stage=6", "data.micro_batch_size=8", *init, *lora
        ),
        6,
    )
    r = run_cli(
        "stage=6",
        "trainer=fsdp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.param_dtype=float32",
        "trainer.precision=32-true",
        f"hydra.run.dir={tmp_path / 'fsdp'}",
        "model.activation_checkpointing=true",
        f"tokenizer.path={expanded_tokenizer}",
        f"paths.cache_dir={packed_cache}",
        *FAST,
        *init,
        *lora,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fsdp = json.loads((tmp_path / "fsdp" / "stage6" / "metrics.json").read_text())
    assert (
        fsdp["groups_changed"]
        == single["groups_changed"]
        == ["adapter", "new_input", "new_output", "old_input", "old_output"]
    )
    assert fsdp["trainable_parameters"] == single["trainable_parameters"]
    for folder in ("stage6", "stage6/adapter"):  # the merged export, and the adapter itself
        a, b = (export_state(tmp_path / run / folder) for run in ("single", "fsdp"))
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert abs(fsdp["val_end"]["ko"]["bpb"] - single["val_end"]["ko"]["bpb"]) < 1e-4


@pytest.mark.slow
def test_qlora_without_cuda_is_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_cli("stage=7", "stage.adapter=qlora", f"hydra.run.dir={tmp_path}", timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: stage.adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit weights) and this machine has none: use "
        "stage.adapter=lora"
    ], r.stderr[-2000:]
