"""Training FLOPs of a stage, computed from the model config and what the stage trains.

Only matrix products count (what ``torch.utils.flop_counter.FlopCounterMode`` counts); norms, activations, softmax,
rotary embeddings and embedding lookups are 0. Per position (one predicted token), with ``a -> b`` a linear layer:

  - forward: ``2 * a * b`` for every linear layer of every decoder layer; attention ``QK^T`` and ``AV``:
    ``2 * 2 * S * heads * head_dim`` per layer (S = positions per sequence = ``seq_len - 1``, every key counted as
    the counter does, causal or not); head ``2 * hidden * V`` (V = old + new rows, both blocks of the split head).
  - backward, only what autograd actually computes: a linear layer's weight gradient ``2 * a * b`` when it
    trains, its input gradient ``2 * a * b`` when its input carries a gradient (something below it trains: an
    embedding row block, an earlier layer, or a trainable norm in front of it). Attention: ``dQ``, ``dK``, ``dV``
    and the score gradient (``2 * S * heads * head_dim`` each) for the operands that carry a gradient, i.e. twice
    the forward when any does. Head (the fused chunked loss, eeve.model.fused_ce): ``2 * hidden * base`` for the
    old rows' weight gradient when they train, ``2 * hidden * new`` for the new rows', ``2 * hidden * V`` for the
    hidden-state gradient when the backbone trains.
  - stages 2 and 4 (output rows only) run the backbone under no_grad: forward only, no backward below the head;
    stage 1 (new input rows): input gradients through every layer and the head, no weight gradients; stage 7:
    weight and input gradients in the layers, none for the head's weights.
  - LoRA (``stage.adapter`` lora/qlora): each adapted linear layer adds its ``A`` (a -> r) and ``B`` (r -> b)
    products: forward ``2 r (a + b)``, weight gradients ``2 r (a + b)``, input gradient through ``B`` always and
    through ``A`` when the layer's input carries a gradient; the frozen base weight gets input gradients only.

Counted: training steps (``steps x tokens per step``: ``train``) and, in the stage that expands the model, the
init's passes over the base model (``init``: ``mass_first_piece``'s teacher pass, ``distill``'s fits; the passes
come from eeve.model.init and are counted with the same formula); a run's budget pays for both. Validation and
evaluation passes are not counted.
``per_token`` is per *counted* training token (``metrics["tokens"]``: ``seq_len`` tokens per sequence, of which
``seq_len - 1`` are predicted), so ``train = tokens x per_token`` and a FLOP budget turns into a token budget by
division. Activation-checkpointing recomputation is not counted (model FLOPs, not hardware FLOPs). torch's
counter charges SDPA's fused backward one extra ``QK^T`` (2.5x the attention forward instead of 2x); eager
attention matches this formula exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L

from eeve.errors import ConfigError
from eeve.layout import flops_spent, metrics_before

_NOT_GATED = {"gpt2", "gpt_neox", "gptj", "opt", "phi", "falcon", "bloom", "starcoder2", "gpt_bigcode", "codegen"}
"""Model types whose MLP has two matrices (up, down); every other is gated (gate, up, down: Llama, Gemma, Qwen...)."""
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GFLOP = 10**9
"""TensorBoard steps are integers: FLOP x-axes are logged in GFLOP (10^9 FLOPs)."""


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated: bool

    @classmethod
    def from_config(cls, config) -> "Shape":
        """From a HF config object or its dict (the text config of a multimodal model)."""
        if not isinstance(config, dict):
            get = getattr(config, "get_text_config", None)
            config = (get() if callable(get) else config).to_dict()
        c = config.get("text_config") or config

        def first(*keys, default=None):
            for k in keys:
                if c.get(k) is not None:
                    return int(c[k])
            if default is None:
                raise ConfigError(f"model config has none of {keys}: cannot count FLOPs for it")
            return default

        hidden = first("hidden_size", "n_embd", "d_model")
        heads = first("num_attention_heads", "n_head")
        if c.get("num_local_experts") or c.get("num_experts"):
            raise ConfigError("FLOP accounting covers dense models only; this config is a mixture of experts")
        return cls(
            hidden=hidden,
            layers=first("num_hidden_layers", "n_layer"),
            heads=heads,
            kv_heads=first("num_key_value_heads", default=heads),
            head_dim=first("head_dim", default=hidden // heads),
            intermediate=first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
            gated=c.get("model_type") not in _NOT_GATED,
        )


class _Tally:
    """Forward and backward FLOPs per position, summed over linear layers and attention."""

    def __init__(self, lora_rank: int, lora_targets: tuple[str, ...]):
        self.fwd = self.bwd = 0
        self.rank, self.targets = lora_rank, lora_targets

    def linear(self, name: str, a: int, b: int, grad_in: bool, trains: bool) -> bool:
        """A linear layer a -> b whose input carries a gradient (grad_in); returns whether its output does."""
        self.fwd += 2 * a * b
        self.bwd += 2 * a * b * (int(grad_in) + int(trains))
        lora = self.rank > 0 and name in self.targets
        if lora:
            r = self.rank
            self.fwd += 2 * r * (a + b)
            self.bwd += 2 * r * (a + b) + 2 * r * b + (2 * r * a if grad_in else 0)
        return grad_in or trains or lora

    def attention(self, s: Shape, seq: int, gq: bool, gk: bool, gv: bool) -> bool:
        unit = 2 * seq * s.heads * s.head_dim  # one of QK^T, AV (and of each gradient product) per position
        self.fwd += 2 * unit
        self.bwd += unit * (int(gq) + int(gk) + int(gq or gk) + int(gv))  # dQ, dK, d(scores) via dP, dV
        return gq or gk or gv


def _decoder_layer(t: _Tally, s: Shape, seq: int, g: bool, full: bool) -> bool:
    """One decoder layer; g: its input carries a gradient, full: its own weights (and norms) train."""
    h, q, kv = s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim
    gn = g or full  # after the (trainable when full) input norm
    gq, gk, gv = (t.linear(n, h, d, gn, full) for n, d in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)))
    ga = t.attention(s, seq, gq, gk, gv)
    g = t.linear("o_proj", q, h, ga, full) or g  # (called first: `or` must not skip the layer)
    gn = g or full
    up = [t.linear(n, h, s.intermediate, gn, full) for n in (("gate_proj", "up_proj") if s.gated else ("up_proj",))]
    return t.linear("down_proj", s.intermediate, h, any(up), full) or g


def flops_per_position(
    config, trainable, base_vocab: int, vocab: int, seq: int, lora_rank: int = 0, lora_targets=DEFAULT_LORA_TARGETS
) -> tuple[int, int]:
    """(forward, backward) FLOPs per predicted position (see the module docstring). ``trainable``: the stage's
    groups; ``seq``: positions per sequence; ``lora_rank`` > 0: the transformer group trains as LoRA adapters."""
    s = config if isinstance(config, Shape) else Shape.from_config(config)
    groups = set(trainable)
    full = "transformer" in groups and lora_rank == 0
    t = _Tally(lora_rank if "transformer" in groups else 0, tuple(lora_targets))
    g = bool(groups & {"old_input", "new_input"})
    for _ in range(s.layers):
        g = _decoder_layer(t, s, seq, g, full)
    g = g or full  # the final norm trains with the transformer
    h, new = s.hidden, vocab - base_vocab
    t.fwd += 2 * h * vocab
    t.bwd += 2 * h * (vocab * g + base_vocab * ("old_output" in groups) + new * ("new_output" in groups))
    return t.fwd, t.bwd


def stage_flops_per_token(model_config, trainable_groups, base_vocab, vocab, seq_len, adapter=None) -> dict:
    """FLOPs per counted training token (``seq_len`` tokens per sequence, ``seq_len - 1`` predicted):
    {"per_token": forward + backward, "forward_per_token": forward}. ``model_config``: HF config (dict or object);
    ``adapter``: None / "none" or a stage's ``(adapter, lora)`` settings, e.g. ``("lora", {"rank": 16})``."""
    rank, targets = _lora(adapter)
    fwd, bwd = flops_per_position(model_config, trainable_groups, base_vocab, vocab, seq_len - 1, rank, targets)
    scale = (seq_len - 1) / seq_len
    return {"per_token": (fwd + bwd) * scale, "forward_per_token": fwd * scale}


def _lora(adapter) -> tuple[int, tuple[str, ...]]:
    if adapter is None or adapter == "none":
        return 0, DEFAULT_LORA_TARGETS
    kind, lora = adapter if isinstance(adapter, (tuple, list)) else (adapter, {})
    if kind == "none":
        return 0, DEFAULT_LORA_TARGETS
    get = lora.get if hasattr(lora, "get") else (lambda k, d=None: getattr(lora, k, d))  # dict/DictConfig/dataclass
    return int(get("rank", 16)), tuple(get("target_modules", None) or DEFAULT_LORA_TARGETS)


def module_flops_per_token(module) -> dict:
    """:func:`stage_flops_per_token` for an EEVEModule after ``configure_model`` (its model, stage and data)."""
    stage, model = module.stage, module.model
    return stage_flops_per_token(
        model.config,
        stage.trainable,
        module.base_vocab_size,
        model.get_input_embeddings().num_embeddings,
        module.cfg.data.seq_len,
        adapter=(stage.adapter, stage.lora),
    )


def init_flops(model_config, base_vocab: int, vocab: int, passes: list[dict]) -> int:
    """FLOPs of an init's passes (eeve.model.teacher's module docstring): a backbone pass costs its tokens times
    :func:`flops_per_position` for its gradient-carrying groups at its positions per sequence, with the head block
    it computes (none, the base rows, or all rows); a ``flops`` pass is what it says."""
    total = 0.0
    for p in passes:
        if "flops" in p:
            total += float(p["flops"])
            continue
        v = {"none": 0, "base": base_vocab, "expanded": vocab}[p["head"]]
        fwd, bwd = flops_per_position(model_config, p["groups"], min(base_vocab, v), v, p["seq"])
        total += (fwd + bwd) * float(p["tokens"])
    return int(round(total))


def module_init_flops(module) -> int:
    """The init's FLOPs when this stage expanded the model (its ``eeve_expansion`` summary), else 0."""
    summary = getattr(module.model, "eeve_expansion", None)
    if summary is None or not summary.passes:
        return 0
    return init_flops(module.model.config, summary.base_vocab_size, summary.vocab_size, summary.passes)


def flops_metrics(module, tokens: int) -> dict:
    """``metrics["flops"]``: FLOPs the stage spent on ``tokens`` counted training tokens (``train``) and, where it
    expanded the model, on the init (``init``)."""
    per = module_flops_per_token(module)
    return {
        "train": int(round(per["per_token"] * tokens)),
        "init": module_init_flops(module),
        "per_token": round(per["per_token"], 1),
        "forward_per_token": round(per["forward_per_token"], 1),
        "counted": "training steps and the init's passes over the base model (validation not counted); matrix "
        "products; see eeve.training.flops",
    }


class FlopsLogger(L.Callback):
    """TensorBoard, in the stage's own folder: ``flops/cumulative`` (FLOPs since the run started: ``offset`` = what
    the earlier stages spent, plus this stage's init when it expanded the model) at every optimizer step, and every
    validation's bits per byte per language against it: ``val_flops/<lang>_bpb`` with step = cumulative FLOPs in
    GFLOP (TensorBoard steps are integers), so all stages' folders share one FLOP x-axis."""

    def __init__(self, offset: float = 0.0):
        self.offset = float(offset)
        self._per_step: float | None = None

    def cumulative(self, pl_module, step: int) -> float:
        if self._per_step is None:
            self._per_step = module_flops_per_token(pl_module)["per_token"] * pl_module.tokens_per_step
            self.offset += module_init_flops(pl_module)
        return self.offset + step * self._per_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        value = self.cumulative(pl_module, trainer.global_step)
        pl_module.log("flops/cumulative", value, on_step=True, on_epoch=False, batch_size=1)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.logger is None or not trainer.is_global_zero:
            return
        step = int(self.cumulative(pl_module, trainer.global_step) // GFLOP)
        for lang, r in pl_module.last_val.items():
            trainer.logger.experiment.add_scalar(f"val_flops/{lang}_bpb", r["bpb"], step)


def flops_before(cfg, number: int) -> float:
    """FLOPs spent by the stages before ``number`` in the schedule whose exports exist (steps and init)."""
    return float(sum(flops_spent(m) or 0 for m in metrics_before(cfg, number)))
