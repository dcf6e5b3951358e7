"""Every configuration schema, typed and documented, and the one way configs are checked.

The schemas are registered with Hydra's ConfigStore (``train_schema``, ``tokenize_schema``) and sit first in the
defaults of conf/config.yaml and conf/tokenize.yaml, so composition itself rejects an unknown key, in a YAML file or
on the command line; :func:`eeve.cli.hydra_error_line` turns Hydra's message into one line with a did-you-mean.
:func:`to_object` is the single entry for code that builds a config from a dict (tests, notebooks). This module is
torch-free: importing it costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from omegaconf import OmegaConf

from eeve.errors import ConfigError
from eeve.text.sources import DocumentSource

T = TypeVar("T")

GROUPS = ("old_input", "new_input", "old_output", "new_output", "transformer")
"""Parameter groups of a split model (see eeve.training.groups): what a stage's ``trainable`` may name."""
RATE_GROUPS = {
    "old_input": "old",
    "old_output": "old",
    "new_input": "new",
    "new_output": "new_output",
    "transformer": "transformer",
    "adapter": "transformer",  # LoRA adapters stand in for the transformer (eeve.training.groups.ADAPTER_GROUP)
}
"""Which learning-rate group (``stage.lr_<name>``) each parameter group belongs to."""


# ------------------------------------------------------------------------------------------------- tokenize.py
@dataclass(kw_only=True)
class CorpusConfig(DocumentSource):
    """The target-language corpus the tokenizer is built from (paths, text_field, format, split, name: see
    :class:`eeve.text.sources.DocumentSource`)."""

    paths: list[str] = field(default_factory=lambda: [".cache/demo/ko/train.txt"])


@dataclass
class TargetConfig:
    """The target language's characters (eeve.text.scripts): new tokens are built from them."""

    scripts: list[str] = field(default_factory=lambda: ["Hangul"])
    """Unicode script names (Hangul, Han, Hiragana, Katakana, Devanagari, Cyrillic, Thai, Arabic, ...); several
    names, e.g. [Han,Hiragana,Katakana] for Japanese, count as one target."""
    ranges: list[str] = field(default_factory=list)
    """Explicit code point ranges added to the target, e.g. ['U+1EA0-U+1EF9'], for languages whose letters are a
    subset of a shared script (Vietnamese in Latin)."""


@dataclass
class CountConfig:
    tokenizer_dir: Optional[str] = None
    """mode=count: the tokenizer folder (or base) whose token frequencies to count."""
    shard_index: int = 0
    """mode=count: count files[shard_index::num_shards] of corpus.paths."""
    num_shards: int = 1
    out: Optional[str] = None
    """mode=count: .npz to write (default <hydra run dir>/counts_<i>of<n>.npz); sum shards with merge_counts."""


@dataclass
class TokenizeConfig:
    run_name: str = "demo"
    """Names the Hydra run folder outputs/tokenize/<run_name>."""
    mode: str = "build"
    """build: expand the tokenizer; count: only count token frequencies of one corpus shard."""
    base_tokenizer: str = ".cache/demo/base_tokenizer/tokenizer.model"
    """SentencePiece BPE .model, or a HF folder / tokenizer.json (SentencePiece-style or byte-level BPE)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    heldout: dict[str, Optional[str]] = field(
        default_factory=lambda: {"ko": ".cache/demo/ko/heldout.txt", "en": ".cache/demo/en/heldout.txt"}
    )
    """Held-out text per language (language -> file, null to skip) for the compression report and the check that
    text without target characters encodes exactly as with the base."""
    output_dir: Optional[str] = None
    """Where the expanded tokenizer folder goes (default: <hydra run dir>/tokenizer). Replaced only on success."""
    intermediate_vocab_size: int = 12000
    """Vocabulary of the intermediate BPE trained on the corpus (EEVE/SOLAR: 40000 on Korean web text)."""
    intermediate_max_mb: Optional[float] = None
    """Train the intermediate BPE on the first N MB of the corpus only (null: all of it); counting always reads all."""
    min_frequency: int = 10
    """Drop new tokens / skip single characters seen fewer times (EEVE: 6000 over ~100 GB)."""
    max_iterations: int = 10
    """Upper bound on the drop/add rounds (steps 3-6)."""
    vocab_multiple_of: int = 64
    """Final vocabulary size is a multiple of this (0 or 1: off), by dropping the rarest removable new tokens."""
    batch_bytes: int = 1 << 20
    """Characters per encode batch when counting (memory per batch, not per corpus)."""
    progress: bool = True
    """tqdm progress bars on stderr."""
    count: CountConfig = field(default_factory=CountConfig)


# ------------------------------------------------------------------------------------------------------ train.py
@dataclass
class ModelConfig:
    """Hydra group ``model`` (conf/model/*.yaml)."""

    name_or_path: Optional[str] = None
    """Local HF folder or hub id of the base model; ``None`` = build a random-init Llama from ``config``."""
    config: dict[str, Any] = field(default_factory=dict)
    """``LlamaConfig`` keyword arguments, used only when ``name_or_path`` is ``None``."""
    dtype: str = "float32"
    """Parameter dtype: ``float32`` or ``bfloat16``."""
    untie_embeddings: bool = True
    """Clone tied input/output embeddings before expansion (the stage table trains them separately)."""
    trust_remote_code: bool = False
    """Pass ``trust_remote_code=True`` to transformers (runs code from the model folder); only when asked."""
    activation_checkpointing: bool = False
    """Recompute decoder layers in backward (applied by the training module, not here)."""
    run_name: str = "demo"
    """The default ``run_name`` (outputs/<run_name>/) and tokenizer folder for this model, so that runs of different
    models never share an output folder (``model=solar`` -> outputs/solar/)."""
    tokenizer: Optional[str] = None
    """The base model's own tokenizer (a SentencePiece .model, a tokenizer.json or an HF folder); null = the
    ``name_or_path`` folder. Read only by ``recipe=no_expansion``, which trains with the base tokenizer."""


ADAPTERS = ("none", "lora", "qlora")
"""What ``stage.adapter`` may name (see eeve.training.adapters)."""

INITS = ("mean", "mean_cov", "random", "mean_subwords", "mass_first_piece", "distill")
"""What ``init`` may name: the methods of eeve.model.init's registry (it refuses a method not listed here)."""


@dataclass
class LoraSettings:
    """``stage.lora``: the LoRA adapter that stands in for full training of the ``transformer`` group."""

    rank: int = 16
    """Rank r of each adapter (A: r x in, B: out x r)."""
    alpha: float = 32.0
    """Scale numerator: the adapter adds (alpha / rank) * B @ A to the frozen weight."""
    dropout: float = 0.0
    """Dropout on the adapter's input; 0 keeps runs deterministic and FSDP ranks equal to one process."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Names of the linear layers inside each decoder layer's attention / MLP to adapt (never the embedding or
    head: their rows train exactly, by group)."""


@dataclass
class StageConfig:
    number: int = 1
    """The stage's number in the EEVE table (1..7); its export goes to ``<run_dir>/stage<number>/``."""
    trainable: list[str] = field(default_factory=list)
    """Parameter groups this stage trains: old_input, new_input, old_output, new_output, transformer."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    weight_decay: float = 0.1
    """Decoupled AdamW weight decay; touches trainable rows only (frozen rows are not optimizer parameters)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 5
    """Linear warm-up, in optimizer steps."""
    max_steps: int = 60
    """Optimizer steps in this stage (ignored when max_tokens is set)."""
    max_tokens: Optional[int] = None
    """Token budget of the stage; overrides max_steps as ceil(max_tokens / tokens per step)."""
    adapter: str = "none"
    """none: the ``transformer`` group trains fully; lora: it trains as LoRA adapters (base weights frozen, merged
    at export); qlora: the same over 4-bit base weights (bitsandbytes, CUDA only)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    lr_new: Optional[float] = None
    """Peak rate of the new rows (new_input, new_output); null = ``lr``. Each rate group is one AdamW param group."""
    lr_new_output: Optional[float] = None
    """Peak rate of the new OUTPUT rows; null = ``lr_new``. A head row's step moves its logit by about
    lr x ||hidden||_1, so output rows need a much smaller rate than input rows: at the input rows' 2e-3 the new
    output rows of a real 135M model overshoot and Korean gets worse (docs/recipes.md, measured)."""
    lr_old: Optional[float] = None
    """Peak rate of the pre-trained vocabulary rows (old_input, old_output); null = ``lr``."""
    lr_transformer: Optional[float] = None
    """Peak rate of the decoder layers and final norm; null = ``lr``."""
    weight_decay_pretrained: Optional[float] = None
    """Weight decay of the pre-trained weights (old rows, transformer); null = ``weight_decay``. Decay pulls them
    toward zero, not toward what the base learned."""
    max_regression: Optional[dict[str, float]] = field(default_factory=lambda: {"en": 0.01})
    """Guard against forgetting (every stage: English at 1 %): at every validation, a language's BPB may exceed the BASE
    model's BPB on the same bytes by at most this fraction (or, when the stage already starts above that, its
    starting BPB). On a breach the stage stops and exports its last validated weights within the limit
    (eeve.training.guard). ``stage.max_regression=null`` turns it off; ``+stage.max_regression.ko=0.05`` adds one."""

    def check_adapter(self, strategy: str) -> None:
        """One-line ConfigError for an adapter setting that cannot run (whether this machine can run ``qlora`` is
        eeve.training.adapters.require_qlora's question, asked when the stage starts)."""
        if self.adapter not in ADAPTERS:
            raise ConfigError(f"stage.adapter={self.adapter} is unknown: choose one of {', '.join(ADAPTERS)}")
        if self.adapter == "none":
            return
        if "transformer" not in self.trainable:
            raise ConfigError(
                f"stage.adapter={self.adapter} adapts the transformer group, but stage {self.number} "
                f"trains only {list(self.trainable)}: use it in a stage that trains 'transformer' (6, 7)"
            )
        lora = self.lora
        if lora.rank < 1 or not lora.alpha > 0 or not 0 <= lora.dropout < 1 or not lora.target_modules:
            raise ConfigError(
                f"stage.lora needs rank >= 1, alpha > 0, 0 <= dropout < 1 and target_modules; got rank="
                f"{lora.rank} alpha={lora.alpha} dropout={lora.dropout} target_modules={lora.target_modules}"
            )
        if self.adapter == "qlora" and strategy == "fsdp":
            raise ConfigError(
                "stage.adapter=qlora runs under trainer=default or trainer=ddp (4-bit weights are not "
                "sharded here): use stage.adapter=lora with trainer=fsdp"
            )

    def rate_groups(self) -> dict[str, tuple[float, float]]:
        """Rate group -> (peak lr, weight decay), for the groups named in ``RATE_GROUPS``."""
        wd_pre = self.weight_decay if self.weight_decay_pretrained is None else self.weight_decay_pretrained
        pick = lambda v: self.lr if v is None else v  # noqa: E731
        new_out = self.lr_new_output if self.lr_new_output is not None else pick(self.lr_new)
        return {
            "new": (pick(self.lr_new), self.weight_decay),
            "new_output": (new_out, self.weight_decay),
            "old": (pick(self.lr_old), wd_pre),
            "transformer": (pick(self.lr_transformer), wd_pre),
        }


@dataclass
class TrainerConfig:
    strategy: str = "single"
    """single | ddp | fsdp (FSDP2 through Lightning's ModelParallelStrategy)."""
    accelerator: str = "auto"
    devices: str | int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    """Lightning precision for single/ddp. Under fsdp, mixed precision comes from param_dtype."""
    param_dtype: str = "float32"
    """fsdp: dtype of the unsharded parameters in forward/backward; gradients are reduced in fp32."""
    accumulate_grad_batches: int = 1
    gradient_clip: float = 1.0
    """Max global gradient norm over the trainable parameters; 0 disables clipping."""
    log_every_n_steps: int = 5
    val_every_n_steps: int = 15
    checkpoint_every_n_steps: int = 20
    keep_checkpoints: int = 2
    deterministic: bool = True


@dataclass
class TokenizerConfig:
    path: str = "outputs/tokenize/demo/tokenizer"
    """Expanded tokenizer folder written by tokenize.py (holds expansion.json and base_tokenizer/)."""


@dataclass
class PathsConfig:
    root: str = "."
    run_dir: str = "outputs/demo"
    cache_dir: str = ".cache"


@dataclass(kw_only=True)
class SourceConfig(DocumentSource):
    """One training source of the mixture: where its documents come from (paths, text_field, format, split, name:
    see :class:`eeve.text.sources.DocumentSource`; relative paths resolve against the data module's ``base_dir``)
    and its weight."""

    ratio: float
    """Mixture weight (normalised over all sources): the expected fraction of training sequences from here."""
    lang: Optional[str] = None
    """Language tag, informational (e.g. ``ko``, ``en``, ``en-ko``)."""


@dataclass(kw_only=True)
class ValConfig(DocumentSource):
    """Held-out text for one validation language (paths, text_field, format, split, name as for
    :class:`SourceConfig`; with ``format: hub`` the split is often ``validation`` or ``test``)."""

    max_sequences: int = 64
    """Use at most this many packed sequences (over all ranks)."""
    lang: Optional[str] = None
    """Language tag of the held-out text (e.g. ``ko``, ``en``), for per-language reports."""


@dataclass
class DataConfig:
    """The ``data`` config group (``conf/data/*.yaml``)."""

    seq_len: int = 2048
    """Tokens per packed sequence (the model sees ``seq_len`` inputs and predicts ``seq_len - 1`` of them)."""
    micro_batch_size: int = 1
    """Sequences per batch per device."""
    num_workers: int = 0
    """DataLoader worker processes per device."""
    new_token_bias: float = 1.0
    """Sampling strength toward sequences rich in new tokens: weight ∝ exp(bias × new-token share); 0 = uniform."""
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    """Training mixture: name -> source."""
    validation: dict[str, ValConfig] = field(default_factory=dict)
    """Validation sets: language -> held-out text; one dataloader each, in this order. A set is named by its
    ``lang`` (its key when ``lang`` is unset): table columns, report panels, TensorBoard tags and
    ``stage.max_regression`` keys. A new one on the command line: ``+data.validation.ja.paths=[FILE]``."""
    seed: int = 0
    """Sampling seed. A training run's stage N draws with ``seed + data.seed + N`` (eeve.training.stages); the data
    module alone uses it as given (its ``seed`` argument overrides it)."""

    def __post_init__(self) -> None:
        self.validation = by_lang("data.validation", self.validation)

    def validate(self, need_paths: bool = True) -> None:
        if int(self.seq_len) < 2:
            raise ConfigError(f"data.seq_len must be >= 2, got {self.seq_len}")
        if int(self.micro_batch_size) < 1:
            raise ConfigError(f"data.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if not self.sources:
            raise ConfigError("data.sources is empty: give at least one training source with paths and ratio")
        for name, s in self.sources.items():
            if not (isinstance(s.ratio, (int, float)) and s.ratio >= 0 and math.isfinite(s.ratio)):
                raise ConfigError(f"data.sources.{name}.ratio must be a finite number >= 0, got {s.ratio!r}")
        if sum(s.ratio for s in self.sources.values()) <= 0:
            raise ConfigError("data.sources ratios sum to 0: give at least one source a positive ratio")
        if not math.isfinite(self.new_token_bias):
            raise ConfigError(f"data.new_token_bias must be finite, got {self.new_token_bias}")
        for name, entry in [*self.sources.items(), *self.validation.items()] if need_paths else []:
            if not entry.paths or "???" in entry.paths:
                raise ConfigError(
                    f"data entry {name!r} has no paths: set data.…{name}.paths=[FILES] on the command line"
                )


@dataclass
class ExportConfig:
    """What a stage writes besides its standard HF export (``<run_dir>/stage<N>/``)."""

    adapter: bool = False
    """Adapter stages: also save the adapter as a PEFT folder (``stage<N>/adapter/``)."""
    delta: bool = False
    """Also write ``stage<N>/delta/delta.safetensors``: only the tensors and rows the stage changed, with their row
    offsets (eeve.model.delta)."""


@dataclass
class PlanConfig:
    """``mode=plan`` (eeve.training.plan): the memory plan per GPU."""

    vocab_size: Optional[int] = None
    """Expanded vocabulary size to plan for when the tokenizer is not built yet (EEVE on SOLAR: 40960); default:
    ``vocab_size`` of the tokenizer's expansion.json."""


@dataclass
class SamplesConfig:
    """Greedy continuations written at the end of every stage (TensorBoard text and metrics.json)."""

    prompts: dict[str, list[str]] = field(
        default_factory=lambda: {
            "ko": ["대한민국의 수도는", "이 함수는 문자열을"],
            "en": ["The capital of France is", "This function returns"],
            "ja": ["日本の首都は", "この関数は文字列を"],
        }
    )
    """Language -> fixed prompts (the same for every stage and the base); those of the languages of
    data.validation are used."""
    max_new_tokens: int = 32
    """Tokens generated per prompt (greedy)."""


@dataclass
class EvalConfig:
    """Evaluation of the base (stage 0) and of every stage export on the same held-out bytes (eeve.eval)."""

    enabled: bool = True
    """Evaluate the base once per run (cached in <run_dir>/stage0/metrics.json) and each stage's export."""
    bytes: int = 100_000
    """UTF-8 bytes of held-out text per language of data.validation: whole documents in file order, up to this
    many bytes; the same text for every model."""
    window: int = 512
    """Tokens per scoring window, BOS included: non-overlapping, each window starts with BOS (see eeve.eval.bpb)."""
    batch_tokens: int = 4096
    """Padded tokens per forward pass while scoring (bounds the [tokens x vocab] logits)."""
    device: str = "auto"
    """Where exports are evaluated: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."""
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks (pip install -e .[eval]): eeve_nextsent_ko/en (local demo tasks), kobest_*,
    haerae, kmmlu, arc_easy, hellaswag, mmlu, ..."""
    after_stages: list[int] = field(default_factory=lambda: [0, 3, 7])
    """Stages whose export runs ``tasks`` (0 = the base)."""
    task_limit: Optional[int] = None
    """Items per task (null: all); for quick checks."""
    include_path: Optional[str] = None
    """Folder of extra task YAMLs (e.g. local copies of the paper's benchmarks for offline clusters)."""
    batch_size: int = 16
    """lm-eval batch size."""
    samples: SamplesConfig = field(default_factory=SamplesConfig)


@dataclass
class InitOptions:
    """Budget of the init methods that run the base model as teacher (``init_options``; eeve.model.init)."""

    documents: int = 512
    """Documents read from the training mixture (each source in proportion to its ratio, from its first files)."""
    teacher_tokens: Optional[int] = None
    """Base-model tokens of those documents the teacher reads (one forward pass each, no gradient); null: twice the
    hidden size, rounded up to 256 and at least 1,024 (the offset direction is a least-squares fit in the hidden
    space, so it needs more aligned positions than dimensions). Measured at step 0 (docs/recipes.md): 1,024 tokens
    init as well as 8,192 on SmolLM2-135M and Gemma-3-270M, at an eighth of the FLOPs a budget pays for them."""

    def teacher_sample(self, hidden: int) -> int:
        """``teacher_tokens``, or its default for a model of this hidden size."""
        if self.teacher_tokens is not None:
            return int(self.teacher_tokens)
        return max(1024, -(-2 * hidden // 256) * 256)

    head_epochs: int = 10
    """distill: passes over the teacher's aligned positions fitting the new output rows (cheap: no backbone); the
    epoch with the lowest loss on held-out positions is kept."""
    head_lr: float = 3e-4
    """distill: Adam rate of that fit."""
    distill_steps: int = 30
    """distill: then steps training new input and output rows through the frozen backbone (0: skip)."""
    distill_batch: int = 4
    """distill: sequences per step."""
    distill_seq_len: int = 128
    """distill: expanded-tokenizer tokens per sequence."""
    distill_lr: float = 2e-3
    """distill: AdamW peak rate of the backbone phase (cosine to 10 %), no weight decay."""


@dataclass
class RecipeConfig:
    """Hydra group ``recipe`` (conf/recipe/*.yaml): what a whole run does, selectable in one word, so that recipes
    are compared on the same data, validation and budget (``python -m eeve.compare``)."""

    name: str = "eeve"
    """Recorded in every stage's metrics.json: eeve (the project's defaults) | eeve_paper | full | no_expansion."""
    expand: bool = True
    """false: no new tokens: the run trains with the base model's own tokenizer (``model.tokenizer``), written to
    ``<run_dir>/tokenizer`` as an expansion with no new tokens (eeve.tokenizer.identity)."""
    stage: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every stage of the recipe (before ``schedule`` and the command line's ``stage.*``), e.g.
    one rate per stage: ``{lr_new: null, lr_old: null, lr_transformer: null}``."""
    mixture: dict[str, float] = field(default_factory=dict)
    """Source name -> ratio, replacing ``data.sources.<name>.ratio`` (e.g. the KoSOLAR card's 83.46/10.69/5.86)."""


@dataclass
class BudgetConfig:
    """The run's training budget, spread over the recipe's stages (eeve.training.budget); at most one of tokens,
    bytes and flops. Unset (all null): each stage's own ``max_steps`` / ``max_tokens``."""

    tokens: Optional[float] = None
    """Training tokens of the whole run (tokens of the run's own tokenizer)."""
    bytes: Optional[float] = None
    """UTF-8 bytes of training text of the whole run (expected bytes per training token of the mixture)."""
    flops: Optional[float] = None
    """Training FLOPs of the whole run (forward + the backward each stage needs; eeve.training.flops)."""
    shares: dict[str, float] = field(default_factory=dict)
    """Stage name -> relative share of the budget (normalised over the run's stages; missing names: 1)."""

    def kind(self) -> Optional[str]:
        given = [k for k in ("tokens", "bytes", "flops") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"budget sets {' and '.join(given)}: give one of budget.tokens, budget.bytes, budget.flops"
            )
        return given[0] if given else None


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    mode: str = "train"
    """train: run the stage(s); plan: print the memory per GPU of each stage (no weights loaded, nothing trained)."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    run_name: str = "demo"
    """Output folder outputs/<run_name>/ (conf/config.yaml: the model's ``run_name``)."""
    seed: int = 1234
    init: str = "mass_first_piece"
    """New-row initialisation at expansion: mass_first_piece (mass-aware) | mean_subwords (EEVE) | distill | mean |
    mean_cov | random (eeve.model.init)."""
    init_options: InitOptions = field(default_factory=InitOptions)
    init_from: Optional[str] = None
    """Weights to start the stage from (an HF folder); None = the previous stage's export (stage 1: expanded base)."""
    resume: str = "auto"
    """auto = continue this stage from its newest good checkpoint; never; or a checkpoint path."""
    overwrite: bool = False
    """Re-train a stage whose export already exists (otherwise it is skipped)."""
    stages: list[str] = field(default_factory=lambda: [str(n) for n in range(1, 8)])
    """What ``stage=all`` runs, in order: names of conf/stage/*.yaml files (a variant such as ``6_lowlr`` may stand
    in for its stage). Each stage starts from the export of the stage before it in this list."""
    stage_numbers: dict[str, int] = field(default_factory=dict)
    """Stage name -> its ``number``, for the names of ``stages`` (variants inherit their stage's number); recorded
    when train.py composes the config (eeve.cli.compose_stage_numbers). A name missing here is its own number."""
    schedule: dict[str, Any] = field(default_factory=dict)
    """Per-stage overrides {"<name>": {lr: ..., max_tokens: ...}} applied on top of conf/stage/<name>.yaml (the
    command line's ``stage.*`` still wins); an entry keyed by the stage number applies to its variants too."""

    def validate(self) -> None:
        if self.mode not in ("train", "plan"):
            raise ConfigError(f"mode={self.mode} is unknown: use mode=train or mode=plan")
        self.data.validate(need_paths=self.mode == "train")  # a memory plan reads no data
        bad = [g for g in self.stage.trainable if g not in GROUPS]
        if bad:
            raise ConfigError(f"stage.trainable has unknown group(s) {bad}: choose from {list(GROUPS)}")
        if self.init not in INITS:
            raise ConfigError(f"init={self.init} is unknown: choose one of {', '.join(INITS)}")
        if not self.stages:
            raise ConfigError("stages is empty: list the stage configs `stage=all` runs, e.g. stages=[1,2,3,4,5,6,7]")
        for lang, limit in (self.stage.max_regression or {}).items():
            if lang not in self.data.validation:
                raise ConfigError(
                    f"stage.max_regression names {lang!r}, which is not a validation language: choose "
                    f"from {list(self.data.validation)} (or turn the guard off with stage.max_regression=null)"
                )
            if not (isinstance(limit, (int, float)) and 0 <= limit < 10):
                raise ConfigError(f"stage.max_regression.{lang}={limit!r}: give a fraction such as 0.01 (1 %)")
        if self.trainer.strategy not in ("single", "ddp", "fsdp"):
            raise ConfigError(
                f"trainer.strategy={self.trainer.strategy} is unknown: use trainer=default, trainer=ddp or trainer=fsdp"
            )
        self.budget.kind()
        for name in self.recipe.mixture:
            if name not in self.data.sources:
                raise ConfigError(
                    f"recipe.mixture names source {name!r}, which data.sources does not have: choose from "
                    f"{list(self.data.sources)}"
                )
        self.stage.check_adapter(self.trainer.strategy)


# -------------------------------------------------------------------------------------- python -m eeve.evaluate
@dataclass
class EvaluateConfig:
    """``python -m eeve.evaluate model=PATH base=PATH``: any HF model folder(s) against a base, on the same bytes."""

    model: Any = None
    """HF model folder (with its tokenizer), or a list of them: each becomes a row of the table."""
    base: Optional[str] = None
    """The base model's HF folder (with its own tokenizer): the reference row (stage 0)."""
    base_tokenizer: Optional[str] = None
    """The base's tokenizer folder when it is not inside ``base`` (e.g. <tokenizer.path>/base_tokenizer)."""
    validation: dict[str, ValConfig] = field(
        default_factory=lambda: {
            "ko": ValConfig(paths=[".cache/demo/ko/heldout.txt"]),
            "en": ValConfig(paths=[".cache/demo/en/heldout.txt"]),
        }
    )
    """Held-out text per language (as data.validation)."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(after_stages=[0]))
    """Settings as in training; ``eval.tasks`` run on every model given."""
    dtype: str = "float32"
    trust_remote_code: bool = False
    output: Optional[str] = None
    """Also write the results as JSON here."""

    def __post_init__(self) -> None:
        self.validation = by_lang("validation", self.validation)


# ---------------------------------------------------------------------------------------------------- checking
def by_lang(where: str, sets: dict[str, Any]) -> dict[str, Any]:
    """Validation sets keyed by their ``lang`` (the key when ``lang`` is unset), in order: the name every report
    uses. Two sets of one language raise a one-line ConfigError."""
    out: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, v in sets.items():
        lang = v.get("lang") if isinstance(v, dict) else getattr(v, "lang", None)
        name = str(lang or key)
        if name in out:
            raise ConfigError(
                f"{where}.{keys[name]} and {where}.{key} are both lang {name}: give each validation set its own lang"
            )
        out[name], keys[name] = v, key
    return out


def to_object(cls: type[T], obj: Any) -> T:
    """Merge a dict / DictConfig / instance onto the schema ``cls``: unknown keys and wrong types raise a one-line
    ConfigError; interpolations are resolved; ``validate()`` runs where the schema has one."""
    if isinstance(obj, cls):
        out = obj
    else:
        try:
            plain = OmegaConf.to_container(obj, resolve=True) if OmegaConf.is_config(obj) else obj
            if isinstance(plain, dict):
                plain = {k: v for k, v in plain.items() if k not in ("hydra", "experiment")}
            out = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), plain))
        except ConfigError:  # a schema's own one-line message (DataConfig.__post_init__)
            raise
        except Exception as e:  # omegaconf's messages span several lines; keep the first
            from omegaconf.errors import MissingMandatoryValue

            key = getattr(e, "full_key", None)
            if isinstance(e, MissingMandatoryValue):
                raise ConfigError(
                    f"config key '{key}' has no value (paths '???' in conf/): set {key}=... on the command line"
                ) from None
            if type(e).__name__ == "ConfigKeyError" and key:
                raise ConfigError(unknown_key_message(str(key), cls)) from None
            first = str(e).splitlines()[0]
            raise ConfigError(
                f"config: {first} (check the spelling of the key in conf/ or on the command line)"
            ) from None
    if hasattr(out, "validate"):
        out.validate()
    return out


def schema_keys(schema) -> list[str]:
    """Every dotted key of a config schema (nested dataclass fields by their type, whatever their default)."""
    import dataclasses
    import typing

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield prefix + f.name
            if dataclasses.is_dataclass(hints.get(f.name)):
                yield from walk(hints[f.name], prefix + f.name + ".")

    return list(walk(schema, ""))


def unknown_key_message(key: str, schema) -> str:
    """One line for a key the schema does not have, with the closest key as a suggestion."""
    import difflib

    keys, leaf = schema_keys(schema), key.rpartition(".")[2]
    siblings = [k for k in keys if k.rpartition(".")[0] == key.rpartition(".")[0]]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.8)
    if not close:  # the same name under another group (trainer.max_steps -> stage.max_steps)
        by_leaf = {k.rpartition(".")[2]: k for k in keys if "." in k}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)]
    parent = key.rpartition(".")[0]
    if parent in keys and not any(k.startswith(parent + ".") for k in keys):  # a dict field: new keys need '+'
        hint = f"'{parent}' is a mapping: add a new entry with '+{key}=...'"
    elif close:
        hint = f"did you mean '{close[0]}'?"
    else:
        hint = "check its spelling (--cfg job lists the keys)"
    return f"unknown config key '{key}' on the command line: {hint}"


def to_train_config(cfg: Any) -> TrainConfig:
    if OmegaConf.is_config(cfg) and cfg.get("mode") == "plan":  # a memory plan reads no data: '???' paths may stay
        cfg = cfg.copy()
        for group in ("sources", "validation"):
            for entry in (cfg.get("data", {}).get(group) or {}).values():
                if OmegaConf.is_missing(entry, "paths"):
                    entry.paths = []
    out = to_object(TrainConfig, cfg)
    for name, ratio in out.recipe.mixture.items():  # the recipe's mixture replaces the data config's ratios
        out.data.sources[name].ratio = float(ratio)
    return out


def to_tokenize_config(cfg: Any) -> TokenizeConfig:
    return to_object(TokenizeConfig, cfg)


def register_configs() -> None:
    """Make the schemas available to Hydra's defaults lists (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="tokenize_schema", node=TokenizeConfig)
