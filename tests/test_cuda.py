"""Checks that need a CUDA GPU (``pytest -m cuda``; bench/gpu_check.py runs them): QLoRA on 4-bit weights end to
end, and the fused split-head loss in bf16 on the GPU against fp32 on the CPU. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.py)"),
]


def test_fused_head_loss_bf16_on_gpu_matches_fp32_on_cpu():
    from eeve.model.split import SplitLMHead

    g = torch.Generator().manual_seed(0)
    H, base, extra, n = 256, 32000, 3264, 2048
    old, new = torch.nn.Linear(H, base, bias=False), torch.nn.Linear(H, extra, bias=False)
    with torch.no_grad():
        old.weight.copy_(0.02 * torch.randn(base, H, generator=g))
        new.weight.copy_(0.02 * torch.randn(extra, H, generator=g))
    head = SplitLMHead(old, new)
    h = torch.randn(1, n, H, generator=g)
    t = torch.randint(0, base + extra, (1, n), generator=g)
    ref, ref_tok = head(h, t)
    gpu = SplitLMHead(torch.nn.Linear(H, base, bias=False), torch.nn.Linear(H, extra, bias=False))
    gpu.load_state_dict(head.state_dict())
    gpu = gpu.to("cuda", torch.bfloat16)
    loss, per_token = gpu(h.to("cuda", torch.bfloat16), t.cuda())
    assert torch.isfinite(loss) and abs(loss.float().item() - ref.item()) <= 1e-2 * ref.item()
    torch.testing.assert_close(per_token.float().cpu(), ref_tok, rtol=3e-2, atol=3e-2)


def test_qlora_layers_on_gpu_freeze_exactly_and_merge_dequantized():
    from test_adapters import LORA, STAGE6, batch, tiny_config, tiny_split, train
    from transformers import LlamaForCausalLM

    from eeve.config import StageConfig
    from eeve.model.split import merge_split_state_dict
    from eeve.training.adapters import adapted_state_dict, attach_adapter, merge_adapter

    stage = StageConfig(number=6, trainable=STAGE6, adapter="qlora", lora=LORA)
    model = attach_adapter(tiny_split(hidden=64), stage, seed=0, device="cuda").cuda()
    assert type(model.model.layers[0].self_attn.q_proj.get_base_layer()).__name__ == "Linear4bit"
    packed = {n: t.clone() for n, t in model.state_dict().items() if ".base_layer." in n}
    train(model, STAGE6, steps=2, device="cuda")
    assert all(torch.equal(t, model.state_dict()[n]) for n, t in packed.items())
    model.eval()
    ids = batch(9, t=20).cuda()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits.float().cpu()
    plain = LlamaForCausalLM(tiny_config(hidden=64)).eval()
    sd = {k: v.cpu() for k, v in merge_split_state_dict(merge_adapter(adapted_state_dict(model), LORA)).items()}
    plain.load_state_dict(sd, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids.cpu()).logits, adapted, rtol=2e-3, atol=2e-3)


def test_qlora_stage_7_on_one_gpu(expanded_tokenizer, tmp_path):
    """train.py's path: stage 7 with stage.adapter=qlora on one GPU; only the adapter changes; the merged export
    loads as a plain HF model; the PEFT folder is written."""
    from test_train import compose_cfg
    from transformers import AutoModelForCausalLM

    from eeve.training.stages import run_stage

    cfg = compose_cfg(
        tmp_path,
        expanded_tokenizer,
        tmp_path / "cache",
        "stage=7",
        "stages=[7]",
        "stage.adapter=qlora",
        "stage.lora.rank=4",
        "export.adapter=true",
        "trainer.accelerator=gpu",
    )
    m = run_stage(cfg, 7)
    assert m["groups_changed"] == ["adapter"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "stage7")
    assert not [k for k in model.state_dict() if "lora" in k or "base_layer" in k]
    assert (tmp_path / "stage7" / "adapter" / "adapter_model.safetensors").is_file()
