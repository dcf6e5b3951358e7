"""Load the base model and expand its vocabulary (EEVE, Kim, Choi, Jeong 2024).

`expand_model` adds rows for the new tokens to the input embedding and to the output head (after untying them),
and initialises the new rows with one of:

* ``mean_subwords`` (EEVE's "subword-based" init, the default):
    - the token's own symbols (e.g. ``"▁한국어"``) are split by the BASE tokenizer's BPE model alone (no normalizer,
      no pre-tokenizer, no post-processor: exactly the pieces the base model saw for this text in context);
    - **rule for the leading word marker**: if the first piece is the bare word-start marker ``"▁"`` (SentencePiece)
      or ``"Ġ"`` (byte-level BPE) and other pieces follow, it is DROPPED. Otherwise thousands of word-initial tokens
      would average in the same ``"▁"`` row (it carries "a word starts here", not the word) and, worse, all of them
      would get the ``"▁"`` output row as their "first piece", i.e. identical logits. A token that is only the
      marker keeps it.
    - input row  = mean of the base input rows of the remaining pieces. Byte-fallback pieces (``<0xNN>``) ARE
      included: that is how the base model saw a character missing from its vocabulary.
    - output row = base output row of the first remaining piece (the first non-marker piece, byte or not): the
      base model's logit for *starting* this token. A Hangul syllable outside the base vocabulary therefore starts
      with the lead-byte piece (``<0xEA>``..``<0xED>``), which is what the base model would have emitted first.
    - pieces that are the unknown token are ignored; a token with no usable piece falls back to ``mean``.
    - consequence (counted as ``n_single_piece``): a word-initial token ``"▁X"`` whose base split is ``"▁", "X"``
      starts as an exact copy of the base ``"X"`` rows (input and output); training separates them. Measured on
      the demo tokenizer (3264 new tokens): 2637 had the marker dropped, 820 use byte pieces, 3.0 pieces/token; the
      output rows of tokens starting with a character missing from the base share its lead-byte row
      (``<0xEA>``..``<0xED>``, ~600 tokens) -- the base model's own first step for those texts.
* ``mean``: every new row = mean of all old rows (input and output separately).
* ``mean_cov``: sample from N(mean, 1e-9 * covariance) of the old rows -- exactly transformers'
  ``resize_token_embeddings(mean_resizing=True)`` default (the 1e-9 factor is theirs; it keeps the new rows'
  logits close to the mean so the step-0 softmax is barely disturbed).
* ``random``: N(0, config.initializer_range).

Padding rows (ids >= base + len(new_tokens) when a larger ``vocab_size`` is asked for) get the ``mean`` rows.
All arithmetic is done in float32 and cast back to the model's dtype.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

INIT_METHODS = ("mean_subwords", "mean", "mean_cov", "random")
SPACE_MARKERS = ("▁", "Ġ")
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


class ExpansionError(ValueError):
    """One-line, user-facing error about model / tokenizer expansion."""


@dataclass
class ModelConfig:
    """Hydra group ``model`` (conf/model/*.yaml)."""

    name_or_path: str | None = None
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

    @classmethod
    def from_cfg(cls, cfg: Any) -> "ModelConfig":
        """Accept a ModelConfig, a dict or an OmegaConf DictConfig."""
        if isinstance(cfg, cls):
            return cfg
        try:  # OmegaConf without importing it at module load
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        cfg = dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise ExpansionError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(names)}")
        out = cls(**cfg)
        out.config = dict(out.config or {})
        return out

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return _DTYPES[str(self.dtype)]
        except KeyError:
            raise ExpansionError(f"model.dtype={self.dtype!r} not supported; use float32 or bfloat16") from None


# ----------------------------------------------------------------------------------------------------------- loading
def load_base_model(cfg: Any, seed: int = 0):
    """Load the base causal LM described by ``cfg`` (ModelConfig / dict / DictConfig).

    ``name_or_path`` set: ``AutoModelForCausalLM.from_pretrained`` with safetensors only and ``trust_remote_code``
    only when the config asks. Otherwise ``LlamaForCausalLM(LlamaConfig(**cfg.config))`` initialised under
    ``torch.manual_seed(seed)`` (same seed -> same weights). Embeddings are not untied here (see ``expand_model``).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    mc = ModelConfig.from_cfg(cfg)
    dtype = mc.torch_dtype
    if mc.name_or_path:
        model = AutoModelForCausalLM.from_pretrained(
            mc.name_or_path, dtype=dtype, trust_remote_code=bool(mc.trust_remote_code), use_safetensors=True
        )
    else:
        if not mc.config:
            raise ExpansionError("model.name_or_path is null and model.config is empty; give one of them")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(LlamaConfig(**mc.config))
        model = model.to(dtype)
        model.config.dtype = dtype
    return model


# ------------------------------------------------------------------------------------------------------- tokenizers
def bare_bpe_tokenizer(tokenizer):
    """A copy of a ``tokenizers.Tokenizer`` with normalizer, pre-tokenizer and post-processor removed."""
    from tokenizers import Tokenizer

    bare = Tokenizer.from_str(tokenizer.to_str())
    bare.normalizer = None
    bare.pre_tokenizer = None
    bare.post_processor = None
    return bare


def bpe_pieces(tokenizer, token: str) -> list[str]:
    """Pieces the BPE model alone turns ``token``'s own symbols into (what ``subword_plan`` uses)."""
    return [t.value for t in _to_tokenizers_tokenizer(tokenizer).model.tokenize(token)]


def _to_tokenizers_tokenizer(tok):
    from tokenizers import Tokenizer

    if isinstance(tok, Tokenizer):
        return tok
    if isinstance(tok, (str, Path)):
        p = Path(tok)
        if p.is_dir():
            if (p / "tokenizer.json").exists():
                return Tokenizer.from_file(str(p / "tokenizer.json"))
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(p)).backend_tokenizer
        return Tokenizer.from_file(str(p))
    backend = getattr(tok, "backend_tokenizer", None)  # transformers fast tokenizer
    if backend is not None:
        return backend
    raise ExpansionError(f"base_tokenizer must be a tokenizers.Tokenizer, a HF fast tokenizer or a path, got {type(tok)}")


def _normalise_new_tokens(new_tokens, base_vocab_size: int) -> list[tuple[int, str]]:
    if isinstance(new_tokens, Mapping):
        items = [(int(i), str(t)) for i, t in new_tokens.items()]
    else:
        items = []
        for k, t in enumerate(new_tokens):
            if isinstance(t, Mapping):
                items.append((int(t["id"]), str(t["token"])))
            elif isinstance(t, (tuple, list)):
                items.append((int(t[0]), str(t[1])))
            else:
                items.append((base_vocab_size + k, str(t)))
    items.sort()
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        raise ExpansionError("new_tokens has duplicate ids")
    if ids and ids[0] < base_vocab_size:
        raise ExpansionError(f"new token id {ids[0]} < base_vocab_size {base_vocab_size}: new ids must follow the base")
    return items


# ------------------------------------------------------------------------------------------------------------ untie
def embeddings_tied(model) -> bool:
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out is None or getattr(out, "weight", None) is None or getattr(inp, "weight", None) is None:
        return False
    return out.weight is inp.weight or (
        out.weight.device.type != "meta" and out.weight.data_ptr() == inp.weight.data_ptr()
    )


def untie_embeddings(model) -> bool:
    """Give the output head its own copy of the input embedding; set the config so save/load keeps them untied.

    Returns True when the model was tied (and is now untied)."""
    tied = embeddings_tied(model)
    if tied:
        out = model.get_output_embeddings()
        out.weight = nn.Parameter(model.get_input_embeddings().weight.detach().clone(),
                                  requires_grad=out.weight.requires_grad)
    for c in {id(model.config): model.config, id(_text_config(model)): _text_config(model)}.values():
        if hasattr(c, "tie_word_embeddings"):
            c.tie_word_embeddings = False
    if hasattr(model, "get_expanded_tied_weights_keys"):  # transformers 5 caches the tie mapping
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    if tied:
        log.info("untied input and output embeddings (lm_head cloned from embed_tokens; config.tie_word_embeddings=False)")
    return tied


def _text_config(model):
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


# ------------------------------------------------------------------------------------------------------------ expand
@dataclass
class ExpansionSummary:
    """What ``expand_model`` did (also logged)."""

    init: str
    base_vocab_size: int
    vocab_size: int
    n_new: int
    n_padding: int = 0
    n_leading_space_skipped: int = 0
    """Tokens whose leading bare "▁"/"Ġ" piece was dropped."""
    n_with_byte_pieces: int = 0
    """Tokens with at least one <0xNN> byte-fallback piece in the input mean."""
    n_fallback_mean: int = 0
    """Tokens with no usable piece (all unknown) that got the ``mean`` rows."""
    n_single_piece: int = 0
    """Tokens whose input (and output) row is a copy of ONE base row (e.g. "▁수" -> "수" after dropping "▁")."""
    mean_pieces: float = 0.0
    """Mean number of pieces per new token used for the input mean (after dropping the marker)."""
    untied: bool = False
    examples: list[dict] = field(default_factory=list)

    def line(self) -> str:
        return (f"expanded vocab {self.base_vocab_size} -> {self.vocab_size} ({self.n_new} new, {self.n_padding} "
                f"padding) init={self.init}: leading-marker skipped {self.n_leading_space_skipped}, byte pieces "
                f"{self.n_with_byte_pieces}, single-piece copies {self.n_single_piece}, fallback-to-mean "
                f"{self.n_fallback_mean}, mean pieces/token "
                f"{self.mean_pieces:.2f}")


def subword_plan(base_tokenizer, new_tokens: Sequence[tuple[int, str]]):
    """For each new token: (input piece ids, output piece id, pieces, flags). Pure, used by init and tests."""
    tok = _to_tokenizers_tokenizer(base_tokenizer)
    unk = None
    model = tok.model
    unk_tok = getattr(model, "unk_token", None)
    if unk_tok is not None:
        unk = tok.token_to_id(unk_tok)
    plan = []
    for tid, text in new_tokens:
        # the BPE model alone (same as eeve.tokenizer_build.bpe_pieces): no normalizer / pre-tokenizer, and unlike
        # encoding with a bare Tokenizer, no added/special-token matching inside the text
        toks = model.tokenize(text)
        pieces, ids = [t.value for t in toks], [t.id for t in toks]
        skipped = False
        if len(pieces) > 1 and pieces[0] in SPACE_MARKERS:
            pieces, ids = pieces[1:], ids[1:]
            skipped = True
        keep = [(p, i) for p, i in zip(pieces, ids) if i != unk]
        plan.append({
            "id": tid,
            "token": text,
            "pieces": [p for p, _ in keep],
            "input_ids": [i for _, i in keep],
            "output_id": keep[0][1] if keep else None,
            "skipped_marker": skipped,
            "byte_pieces": any(_BYTE_PIECE.match(p) for p, _ in keep),
        })
    return plan


def _mean_cov_rows(old: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    mean = old.mean(0)
    centered = old - mean
    cov = centered.T @ centered / old.shape[0]
    try:
        chol = torch.linalg.cholesky(1e-9 * cov)
    except Exception:  # not positive definite (e.g. fewer rows than dims): fall back to the mean, like transformers
        log.warning("mean_cov: covariance is not positive definite; using the mean")
        return mean.expand(n, -1).clone()
    z = torch.randn(n, old.shape[1], generator=gen, dtype=old.dtype)
    return mean + z @ chol.T


def _init_rows(kind: str, old: torch.Tensor, n: int, gen: torch.Generator, std: float) -> torch.Tensor:
    if kind == "mean":
        return old.mean(0).expand(n, -1).clone()
    if kind == "mean_cov":
        return _mean_cov_rows(old, n, gen)
    if kind == "random":
        return torch.randn(n, old.shape[1], generator=gen, dtype=old.dtype) * std
    raise ExpansionError(f"init={kind!r} unknown; choose one of {INIT_METHODS}")


def expand_model(model, base_tokenizer, new_tokens, base_vocab_size: int, init: str = "mean_subwords", seed: int = 0,
                 *, vocab_size: int | None = None, untie: bool = True, return_summary: bool = False):
    """Untie, resize to the expanded vocabulary and initialise the new rows (see module docstring).

    ``new_tokens``: ``{id: token}``, a list of tokens (ids follow ``base_vocab_size``), or the ``new_tokens`` list of
    ``expansion.json`` (dicts with ``id`` and ``token``). ``vocab_size``: total rows (default
    ``base_vocab_size + len(new_tokens)``; larger = padding rows with the mean init). Returns the model (modified in
    place), or ``(model, ExpansionSummary)`` with ``return_summary=True``; the summary is also ``model.eeve_expansion``.
    """
    if init not in INIT_METHODS:
        raise ExpansionError(f"init={init!r} unknown; choose one of {INIT_METHODS}")
    tok = _to_tokenizers_tokenizer(base_tokenizer)
    inp = model.get_input_embeddings()
    rows = inp.weight.shape[0]
    tok_size = tok.get_vocab_size(with_added_tokens=True)
    if rows != base_vocab_size or tok_size != base_vocab_size:
        raise ExpansionError(
            f"vocab mismatch: model has {rows} embedding rows, base tokenizer has {tok_size} tokens, expansion "
            f"base_vocab_size={base_vocab_size}; build the expanded tokenizer from THIS model's own tokenizer")
    items = _normalise_new_tokens(new_tokens, base_vocab_size)
    n_new = len(items)
    min_size = (items[-1][0] + 1) if items else base_vocab_size
    V = vocab_size if vocab_size is not None else max(min_size, base_vocab_size + n_new)
    if V < min_size:
        raise ExpansionError(f"vocab_size={V} is smaller than the largest new id + 1 ({min_size})")

    untied = False
    if embeddings_tied(model):
        if not untie:
            raise ExpansionError("model has tied input/output embeddings and untie_embeddings=false; the EEVE stage "
                                 "table trains them separately: set model.untie_embeddings=true")
        untied = untie_embeddings(model)
    elif untie:
        untie_embeddings(model)  # make sure config says untied
    out = model.get_output_embeddings()
    if out is None or getattr(out, "bias", None) is not None:
        raise ExpansionError("expand_model needs a bias-free output head (lm_head)")

    gen = torch.Generator().manual_seed(int(seed))
    old_in = inp.weight.detach().float()
    old_out = out.weight.detach().float()
    H = old_in.shape[1]
    std = float(getattr(_text_config(model), "initializer_range", 0.02))
    summary = ExpansionSummary(init=init, base_vocab_size=base_vocab_size, vocab_size=V, n_new=n_new, untied=untied)

    new_in = old_in.mean(0).expand(V - base_vocab_size, -1).clone()  # padding / fallback default
    new_out = old_out.mean(0).expand(V - base_vocab_size, -1).clone()
    rel = torch.tensor([i - base_vocab_size for i, _ in items], dtype=torch.long)
    if n_new:
        if init == "mean_subwords":
            plan = subword_plan(tok, items)
            flat, seg, out_ids, out_rows = [], [], [], []
            n_pieces = 0
            for k, p in enumerate(plan):
                summary.n_leading_space_skipped += p["skipped_marker"]
                summary.n_with_byte_pieces += p["byte_pieces"]
                if not p["input_ids"]:
                    summary.n_fallback_mean += 1
                    continue
                n_pieces += len(p["input_ids"])
                summary.n_single_piece += len(p["input_ids"]) == 1
                flat += p["input_ids"]
                seg += [int(rel[k])] * len(p["input_ids"])
                out_ids.append(p["output_id"])
                out_rows.append(int(rel[k]))
            usable = n_new - summary.n_fallback_mean
            summary.mean_pieces = n_pieces / usable if usable else 0.0
            summary.examples = [{"token": p["token"], "pieces": p["pieces"]} for p in plan[:5]]
            if flat:
                seg_t = torch.tensor(seg, dtype=torch.long)
                sums = torch.zeros(V - base_vocab_size, H).index_add_(0, seg_t, old_in[torch.tensor(flat)])
                cnt = torch.zeros(V - base_vocab_size).index_add_(0, seg_t, torch.ones(len(seg)))
                rows_t = torch.tensor(out_rows, dtype=torch.long)
                new_in[rows_t] = sums[rows_t] / cnt[rows_t, None]
                new_out[rows_t] = old_out[torch.tensor(out_ids, dtype=torch.long)]
        else:
            new_in[rel] = _init_rows(init, old_in, n_new, gen, std)
            new_out[rel] = _init_rows(init, old_out, n_new, gen, std)
    summary.n_padding = V - base_vocab_size - n_new

    dt, dev = inp.weight.dtype, inp.weight.device
    emb = nn.Embedding(V, H, padding_idx=inp.padding_idx, device="meta")
    emb.weight = nn.Parameter(torch.cat([inp.weight.detach(), new_in.to(dev, dt)], 0),
                              requires_grad=inp.weight.requires_grad)
    head = nn.Linear(H, V, bias=False, device="meta")
    head.weight = nn.Parameter(torch.cat([out.weight.detach(), new_out.to(out.weight.device, out.weight.dtype)], 0),
                               requires_grad=out.weight.requires_grad)
    model.set_input_embeddings(emb)
    model.set_output_embeddings(head)
    for c in {id(model.config): model.config, id(_text_config(model)): _text_config(model)}.values():
        c.vocab_size = V
    if hasattr(model, "vocab_size"):
        model.vocab_size = V
    model.eeve_expansion = summary
    log.info(summary.line())
    return (model, summary) if return_summary else model


# --------------------------------------------------------------------------------------- expanded tokenizer folders
def read_expansion(tokenizer_dir: str | Path) -> dict:
    """``expansion.json`` of an expanded tokenizer folder (written by tokenize.py)."""
    p = Path(tokenizer_dir) / "expansion.json"
    if not p.exists():
        raise ExpansionError(f"no expanded tokenizer at {tokenizer_dir} (expansion.json missing): run `python "
                             "tokenize.py` first or set tokenizer.path=FOLDER")
    return json.loads(p.read_text(encoding="utf-8"))


def expand_from_tokenizer_dir(model, tokenizer_dir: str | Path, init: str = "mean_subwords", seed: int = 0, *,
                              untie: bool = True, return_summary: bool = False):
    """``expand_model`` with base tokenizer, new tokens and sizes read from an expanded tokenizer folder."""
    d = Path(tokenizer_dir)
    meta = read_expansion(d)
    base_dir = d / "base_tokenizer"
    if not base_dir.exists():
        raise ExpansionError(f"{base_dir} missing: needed for subword initialisation")
    return expand_model(model, _to_tokenizers_tokenizer(base_dir), meta["new_tokens"], int(meta["base_vocab_size"]),
                        init=init, seed=seed, vocab_size=int(meta.get("vocab_size") or 0) or None, untie=untie,
                        return_summary=return_summary)
