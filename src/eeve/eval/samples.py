"""Greedy continuations of fixed prompts: what each stage (and the base) writes, kept in metrics.json and shown in
TensorBoard as text."""

from __future__ import annotations

import torch

from eeve.eval.bpb import load_tokenizer


@torch.no_grad()
def greedy_samples(model, tokenizer, prompts: dict[str, list[str]], max_new_tokens: int = 32) -> dict[str, list[dict]]:
    """{lang: [{prompt, continuation}]}: ``max_new_tokens`` greedy tokens after BOS + prompt (stops at EOS)."""
    info = load_tokenizer(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {}
    try:
        for lang, texts in prompts.items():
            out[lang] = []
            for prompt in texts:
                ids = info.tok.encode(prompt, add_special_tokens=False).ids
                start = [info.bos_id] if info.bos_id is not None else []
                x = torch.tensor([start + ids], device=device)
                y = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=info.eos_id if info.eos_id is not None else 0,
                    eos_token_id=info.eos_id,
                )
                # Decode prompt and continuation together, so a leading space of the continuation survives.
                full = info.tok.decode(ids + y[0, x.shape[1] :].tolist(), skip_special_tokens=True)
                head = info.tok.decode(ids, skip_special_tokens=True)
                continuation = full[len(head) :] if full.startswith(head) else full
                out[lang].append({"prompt": prompt, "continuation": continuation})
    finally:
        model.train(was_training)
    return out


def samples_markdown(samples: dict[str, list[dict]], lang: str) -> str:
    """One language's samples as TensorBoard text (markdown): the prompt in bold, then the continuation."""
    return "\n\n".join(f"**{s['prompt']}**{s['continuation']}" for s in samples.get(lang, []))
