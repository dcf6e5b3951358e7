"""`python train.py mode=plan ...`: memory per GPU for each stage, before renting GPUs. Arithmetic, no weights.

The model is built on the meta device from its config (a local folder's config.json, else ``model.config``), split
into the five parameter groups at the base vocabulary, and every figure follows from the stage's trainable groups
and the trainer settings:

- **parameters**: storage dtype (``model.dtype``, or bf16 under ``precision=bf16-true``) x all parameters, divided
  over the FSDP world; under FSDP plus the gathered units in flight (the current and the prefetched one, in
  ``trainer.param_dtype``).
- **gradients**: trainable parameters only (frozen rows have none: eeve.training.groups); FSDP: sharded, plus
  one unit's unsharded gradient and its fp32 reduce copy; DDP: plus its gradient buckets (a second copy).
- **optimizer**: AdamW's two moments of the trainable parameters (sharded under FSDP).
- With ``stage.adapter=lora`` the transformer group trains as LoRA adapters (eeve.training.adapters, fp32): the
  model carries them, and gradients and optimizer state are the adapters' and the trained rows'.
- **activations**: what one micro-batch keeps for backward, counted by running the real layers on fake tensors
  (``torch`` FakeTensorMode) and summing the tensors autograd saves — one decoder layer, and the embedding and
  final norm — for this stage's requires_grad pattern, dtype and autocast; with activation checkpointing, each
  layer's input plus one layer being recomputed. Plus the fused loss head (eeve.model.fused_ce): one chunk of
  fp32 logits with log-softmax temporaries, and the fp32 head-gradient accumulators of the rows that train.
  Stages that train neither input rows nor the transformer run the backbone without autograd.
- **peak** is not the sum: parameter gradients only exist from the backward on (Lightning zeroes them with
  ``set_to_none``) while activations are freed layer by layer, so peak = parameters + optimizer + the largest of
  (forward end, head backward, end of backward, optimizer step), each with what is alive then.
Measured against real CPU training steps for the tiny and a mid-size debug config (tests/test_plan.py).
What is left out: the CUDA context and allocator reserve (~0.5-1 GiB per GPU), NCCL buffers, fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eeve.config import StageConfig, TrainConfig
from eeve.errors import ConfigError
from eeve.layout import resolve

GiB = float(1 << 30)
INPUT_GROUPS = ("old_input", "new_input")


@dataclass
class MemoryPlan:
    """Bytes per GPU for one stage (see the module docstring), and its token budget."""

    stage: int
    trainable: list[str]
    params: float
    grads: float
    optimizer: float
    activations: float
    peak: float
    tokens_per_step: int = 0
    steps: int = 0
    phase: str = ""
    """Where the peak is reached: forward, head backward, end of backward or optimizer step."""
    setting: dict[str, str] = field(default_factory=dict)
    """What the plan assumed (model, trainer, batch), one line each."""
    adapter: str = ""
    """How the transformer group trains when not fully, e.g. ``lora r16``."""


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _meta_model(
    config,
    vocab_size: int,
    base_vocab: int,
    trainable: list[str],
    dtype: torch.dtype,
    stage: StageConfig | None = None,
    num_layers: int | None = None,
):
    """The split model on the meta device (no memory) with ``vocab_size`` rows (and ``num_layers`` layers), in
    ``dtype``, carrying the stage's adapter if it has one, with requires_grad set as the stage sets it."""
    import logging

    from transformers import AutoModelForCausalLM

    from eeve.model.split import split_vocab
    from eeve.training.adapters import attach_adapter
    from eeve.training.groups import set_trainable

    config = config.__class__.from_dict(
        {
            **config.to_dict(),
            "vocab_size": vocab_size,
            "tie_word_embeddings": False,
            **({"num_hidden_layers": num_layers} if num_layers is not None else {}),
        }
    )
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    split_vocab(model, base_vocab)
    quiet = [logging.getLogger(n) for n in ("eeve.training.adapters", "eeve.training.groups")]
    levels = [q.level for q in quiet]
    for q in quiet:  # their per-build INFO lines would repeat for every stage planned
        q.setLevel(logging.WARNING)
    try:
        if stage is not None and stage.adapter != "none":
            attach_adapter(model, stage, seed=0)
        set_trainable(model, trainable)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return model


def _saved_bytes(run) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward while ``run()`` runs."""
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        sizes[st._cdata] = st.nbytes()
        return t

    params = run.params if hasattr(run, "params") else set()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(n for k, n in sizes.items() if k not in params)


def _activation_parts(
    config,
    vocab_size: int,
    base_vocab: int,
    trainable: list[str],
    batch: int,
    tokens: int,
    dtype: torch.dtype,
    autocast: torch.dtype | None,
    stage: StageConfig | None,
) -> dict[str, int]:
    """Saved bytes of one decoder layer (``layer``) and of the rest of the backbone (``rest``: embedding, rotary,
    final norm), for one micro-batch of ``batch`` x ``tokens``, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = _meta_model(config, vocab_size, base_vocab, trainable, dtype, stage, num_layers=1)
    input_grad = any(g in trainable for g in INPUT_GROUPS) or "transformer" in trainable
    cast = torch.autocast("cpu", dtype=autocast) if autocast is not None else torch.autocast("cpu", enabled=False)
    with FakeTensorMode(allow_non_fake_inputs=True):
        grads = {n: p.requires_grad for n, p in model.named_parameters()}
        model = model.to_empty(device="cpu")
        for n, p in model.named_parameters():  # to_empty keeps requires_grad, but say so rather than rely on it
            p.requires_grad_(grads[n])
        params = {p.untyped_storage()._cdata for p in model.parameters()}
        ids = torch.zeros(batch, tokens, dtype=torch.long)
        hidden = torch.empty(batch, tokens, model.config.hidden_size, dtype=dtype, requires_grad=input_grad)
        positions = torch.arange(tokens)[None].expand(batch, tokens)
        rope = model.model.rotary_emb(hidden, positions)
        layer = model.model.layers[0]

        def whole():
            with cast:
                model.model(input_ids=ids, use_cache=False)

        def one_layer():
            with cast:
                layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rope)

        whole.params = one_layer.params = params
        both, single = _saved_bytes(whole), _saved_bytes(one_layer)
    return {"layer": single, "rest": max(both - single, 0)}


def estimate(
    config,
    vocab_size: int,
    base_vocab: int,
    trainable: list[str],
    *,
    micro_batch: int,
    seq_len: int,
    storage_dtype: torch.dtype,
    compute_dtype: torch.dtype,
    autocast: bool = False,
    strategy: str = "single",
    world: int = 1,
    checkpointing: bool = False,
    accumulate: int = 1,
    gpu: bool = True,
    stage: StageConfig | None = None,
) -> dict[str, Any]:
    """Bytes per device for one stage (see the module docstring). ``config``: the base model's transformers
    config; ``compute_dtype``: dtype of the weights and activations in forward (FSDP ``param_dtype``, or the
    autocast dtype when ``autocast``); ``stage``: for its adapter (LoRA trains adapters, not the transformer)."""
    from eeve.training.groups import group_parameters

    model = _meta_model(config, vocab_size, base_vocab, trainable, storage_dtype, stage)
    fsdp = strategy == "fsdp"
    shape = _Shape(
        h=model.config.hidden_size,
        n_layers=len(model.model.layers),
        v_old=base_vocab,
        v_new=vocab_size - base_vocab,
        n_tok=micro_batch * (seq_len - 1),  # the model reads seq_len - 1 inputs and predicts the next of each
        cs=_size(compute_dtype),
        ss=_size(storage_dtype),
        shard=world if fsdp else 1,
        trainable=list(trainable),
    )
    state = _state_bytes(model, shape, fsdp, strategy == "ddp")
    part = _activation_parts(
        config,
        vocab_size,
        base_vocab,
        trainable,
        micro_batch,
        seq_len - 1,
        compute_dtype if (fsdp or not autocast) else storage_dtype,
        compute_dtype if autocast and not fsdp else None,
        stage,
    )
    head_w = shape.cs if (fsdp or autocast) else shape.ss  # dtype of the head weights in its forward
    phases = _phases(shape, state, part, head_w, checkpointing=checkpointing, accumulate=accumulate, gpu=gpu)
    counts = {g: sum(p.numel() for p in ps) for g, ps in group_parameters(model).items()}
    return _summary(shape, state, part, phases, counts, carried=state["grads"] if accumulate > 1 else 0.0)


def _summary(
    s: _Shape, state: dict, part: dict[str, int], phases: dict[str, float], counts: dict, carried: float
) -> dict[str, Any]:
    """`estimate`'s answer: the columns, the peak and where it is reached."""
    head_grads, reduce_buf = _head_grad_bytes(s), state["reduce_buf"]
    activations = (
        max(
            phases["forward"],
            phases["head backward"] - head_grads - reduce_buf,
            phases.get("layer backward", 0) - head_grads - reduce_buf,
        )
        - carried
    )
    return {
        "params": state["params"] + state["gather"],
        "grads": state["grads"] + state["buckets"] + reduce_buf,
        "optimizer": state["optimizer"],
        "activations": activations,
        "peak": state["params"] + state["gather"] + state["optimizer"] + state["buckets"] + max(phases.values()),
        "phase": max(phases, key=phases.get),
        "counts": counts,
        "layer_saved": part["layer"],
        "rest_saved": part["rest"],
        "units": state["units"],
    }


@dataclass
class _Shape:
    """What the arithmetic of `estimate` reads: sizes, dtype widths, the FSDP shard count, the trained groups."""

    h: int  # hidden size
    n_layers: int
    v_old: int
    v_new: int
    n_tok: int  # tokens in one micro-batch
    cs: int  # bytes per element in compute
    ss: int  # bytes per element in storage
    shard: int  # the FSDP world, else 1
    trainable: list[str]

    @property
    def backbone_grad(self) -> bool:
        return any(g in self.trainable for g in (*INPUT_GROUPS, "transformer"))

    @property
    def trained_head_rows(self) -> int:
        return ("old_output" in self.trainable) * self.v_old + ("new_output" in self.trainable) * self.v_new


def _nbytes(ps) -> int:  # adapters are kept in fp32 whatever the model's dtype
    return sum(p.numel() * p.element_size() for p in ps)


def _state_bytes(model, s: _Shape, fsdp: bool, ddp: bool) -> dict[str, Any]:
    """Parameters, gradients, optimizer state, FSDP units and buffers, DDP buckets (bytes per device)."""
    train = [p for p in model.parameters() if p.requires_grad]
    train_bytes = _nbytes(train)
    # FSDP units: each decoder layer, old and new embedding rows, the head (old and new rows together)
    layer0 = model.model.layers[0]
    units = {
        "layer": _nbytes(layer0.parameters()) * s.cs / s.ss,
        "embed_old": s.v_old * s.h * s.cs,
        "embed_new": s.v_new * s.h * s.cs,
        "head": (s.v_old + s.v_new) * s.h * s.cs,
    }
    trained_in_unit = {
        "layer": _nbytes(p for p in layer0.parameters() if p.requires_grad),
        "embed_old": s.v_old * s.h * s.ss * ("old_input" in s.trainable),
        "embed_new": s.v_new * s.h * s.ss * ("new_input" in s.trainable),
        "head": s.h * s.ss * s.trained_head_rows,
    }
    return {
        "train_bytes": train_bytes,
        "largest": max((p.numel() * p.element_size() for p in train), default=0),
        "params": _nbytes(model.parameters()) / s.shard,
        "grads": train_bytes / s.shard,
        "optimizer": 2 * train_bytes / s.shard,
        "units": units,
        "gather": 2 * max(units.values()) if fsdp else 0.0,
        # a unit's unsharded gradient (frozen rows have none) and its fp32 copy for the reduce-scatter
        "reduce_buf": max(trained_in_unit.values()) * (s.cs + 4) / s.ss if fsdp else 0.0,
        "buckets": train_bytes if ddp else 0.0,
    }


def _head_grad_bytes(s: _Shape) -> float:
    return s.trained_head_rows * s.h * s.ss / s.shard


def _phases(
    s: _Shape, state: dict, part: dict[str, int], head_w: int, *, checkpointing: bool, accumulate: int, gpu: bool
) -> dict[str, float]:
    """Bytes alive beyond parameters and optimizer state at each point of a step (forward end, head backward,
    end of backward, optimizer step, and the recomputed last layer under checkpointing)."""
    from eeve.model.split import SplitLMHead

    vocab_size = s.v_old + s.v_new
    layer_in = s.n_tok * s.h * s.cs
    if not s.backbone_grad:
        backbone = 2 * layer_in  # no autograd: the hidden states in flight and the final output for the head
    elif checkpointing:  # each layer's input; a layer's saved tensors exist only while it is recomputed in backward
        backbone = part["rest"] + s.n_layers * layer_in
    else:
        backbone = part["rest"] + s.n_layers * part["layer"]
    hidden_saved = s.n_tok * s.h * s.cs if s.backbone_grad else 0
    head_saved = hidden_saved + 4 * s.h * s.trained_head_rows + 4 * s.n_tok
    chunk = min(s.n_tok, max(1, SplitLMHead.chunk_elements // vocab_size))
    chunk_tmp = 4 * chunk * (vocab_size + max(s.v_old, s.v_new))  # fp32 logits of both blocks + logsumexp's temporary
    head_bwd_tmp = (4 * s.h * s.trained_head_rows if head_w != 4 else 0) + hidden_saved
    head_grads, reduce_buf, grads = _head_grad_bytes(s), state["reduce_buf"], state["grads"]
    # foreach AdamW temporaries vs per-tensor ones
    step_tmp = state["train_bytes"] / s.shard if gpu else 2 * state["largest"]
    carried = grads if accumulate > 1 else 0.0  # accumulated gradients live through the next forward
    phases = {
        "forward": carried + backbone + head_saved + chunk_tmp,
        "head backward": carried + backbone + head_saved + head_bwd_tmp + head_grads + reduce_buf,
        "end of backward": grads + reduce_buf,
        "optimizer step": grads + step_tmp,
    }
    if s.backbone_grad and checkpointing:  # the last layer recomputed, with every layer input still held
        phases["layer backward"] = carried + backbone + part["layer"] + head_grads + reduce_buf
    return phases


# ------------------------------------------------------------------------------------------------ from the config
def _arch(cfg: TrainConfig):
    """(transformers config of the base model, where it came from)."""
    from transformers import AutoConfig, LlamaConfig

    m = cfg.model
    if m.name_or_path:
        folder = Path(m.name_or_path).expanduser()
        if not folder.is_absolute():
            folder = Path(cfg.paths.root) / folder
        if (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(str(folder), trust_remote_code=m.trust_remote_code), str(folder)
    if not m.config:
        raise ConfigError(
            f"mode=plan needs the model's architecture: model.name_or_path={m.name_or_path!r} is not a "
            "local folder with config.json and model.config is empty; give one of them"
        )
    return LlamaConfig(**dict(m.config)), "model.config" + (f" (for {m.name_or_path})" if m.name_or_path else "")


def _vocab(cfg: TrainConfig, base_vocab: int) -> tuple[int, str]:
    if cfg.plan.vocab_size:
        return int(cfg.plan.vocab_size), "plan.vocab_size"
    exp = resolve(cfg.tokenizer.path, cfg.paths.root) / "expansion.json"
    if exp.is_file():
        import json

        return int(json.loads(exp.read_text())["vocab_size"]), str(exp.parent)
    raise ConfigError(
        f"mode=plan needs the expanded vocabulary size: no tokenizer at {exp.parent}; build it with "
        "tokenize.py or pass plan.vocab_size=N (EEVE on SOLAR: 40960)"
    )


def world_size(cfg: TrainConfig) -> int:
    """trainer.devices x trainer.num_nodes; devices=auto counts this machine's GPUs (1 without)."""
    d = cfg.trainer.devices
    if isinstance(d, str):
        d = d.strip()
        if d in ("auto", "-1"):
            d = max(torch.cuda.device_count(), 1) if cfg.trainer.accelerator != "cpu" else 1
        elif "," in d:
            d = len([x for x in d.split(",") if x.strip()])
        else:
            d = int(d)
    return int(d) * int(cfg.trainer.num_nodes)


def _dtypes(cfg: TrainConfig) -> tuple[torch.dtype, torch.dtype, bool]:
    """(storage dtype of the parameters, compute dtype, autocast?) for this trainer."""
    from eeve.model.load import torch_dtype

    storage = torch_dtype(cfg.model.dtype)
    t = cfg.trainer
    if t.strategy == "fsdp":
        return storage, torch_dtype(t.param_dtype), False
    p = str(t.precision)
    if p.endswith("-true"):
        low = {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(p)
        return (low, low, False) if low is not None else (storage, storage, False)
    if p.endswith("-mixed"):
        return storage, torch.bfloat16 if p.startswith("bf16") else torch.float16, True
    return storage, storage, False


def plan_stage(cfg: TrainConfig) -> MemoryPlan:
    """The plan of the stage ``cfg`` describes (its ``setting`` says what it assumed)."""
    config, arch_from = _arch(cfg)
    base_vocab = int(config.vocab_size)
    vocab, vocab_from = _vocab(cfg, base_vocab)
    world = world_size(cfg)
    storage, compute, autocast = _dtypes(cfg)
    t, d, s = cfg.trainer, cfg.data, cfg.stage
    est = estimate(
        config,
        vocab,
        base_vocab,
        list(s.trainable),
        micro_batch=d.micro_batch_size,
        seq_len=d.seq_len,
        storage_dtype=storage,
        compute_dtype=compute,
        autocast=autocast,
        strategy=t.strategy,
        world=world,
        checkpointing=cfg.model.activation_checkpointing,
        accumulate=t.accumulate_grad_batches,
        gpu=t.accelerator != "cpu",
        stage=s,
    )
    tokens_per_step = d.micro_batch_size * d.seq_len * world * t.accumulate_grad_batches
    steps = math.ceil(s.max_tokens / tokens_per_step) if s.max_tokens else s.max_steps
    n_params = sum(est["counts"].values())
    setting = {
        "model": f"{arch_from}: {n_params / 1e6:,.1f} M parameters at vocabulary {vocab:,} (base {base_vocab:,}; "
        f"from {vocab_from})",
        "trainer": f"strategy={t.strategy}, world size {world} (trainer.devices x trainer.num_nodes), parameters "
        f"{str(storage).removeprefix('torch.')}, compute {str(compute).removeprefix('torch.')}"
        f"{' (autocast)' if autocast else ''}, activation checkpointing "
        f"{'on' if cfg.model.activation_checkpointing else 'off'}",
        "batch": f"micro-batch {d.micro_batch_size} x seq_len {d.seq_len}, gradient accumulation "
        f"{t.accumulate_grad_batches}",
    }
    return MemoryPlan(
        s.number,
        list(s.trainable),
        est["params"],
        est["grads"],
        est["optimizer"],
        est["activations"],
        est["peak"],
        tokens_per_step,
        steps,
        est["phase"],
        setting,
        f"{s.adapter} r{s.lora.rank}" if s.adapter != "none" else "",
    )


def plan_table(plans: list[MemoryPlan]) -> str:
    """Markdown table, GiB per GPU, one row per stage, with the settings of the first above it."""
    unit, scale = ("GiB", GiB) if max(p.peak for p in plans) >= GiB else ("MiB", float(1 << 20))

    def g(x: float) -> str:
        return f"{x / scale:,.2f}"

    lines = [
        f"memory plan per GPU in {unit} (arithmetic: no weights loaded, nothing run on a GPU)",
        *(f"  {v}" for v in plans[0].setting.values()),
        "",
        "| stage | trains | parameters | gradients | optimizer | activations | peak | tokens/step | steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in plans:
        trains = "+".join(p.trainable) + (f" ({p.adapter})" if p.adapter else "")
        lines.append(
            f"| {p.stage} | {trains} | {g(p.params)} | {g(p.grads)} | {g(p.optimizer)} | "
            f"{g(p.activations)} | **{g(p.peak)}** | {p.tokens_per_step:,} | {p.steps:,} |"
        )
    lines.append("")
    lines.append(
        "peak = parameters + optimizer + the largest of forward, head backward, end of backward and "
        "optimizer step (gradients exist only from the backward on); CUDA context, NCCL buffers and "
        "allocator fragmentation come on top (plan ~1 GiB)."
    )
    return "\n".join(lines)
