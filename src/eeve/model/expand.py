"""Expanding a base model's vocabulary: untie the embeddings, append rows for the new tokens to the input embedding
and to the output head, and initialise them with an init method (:mod:`eeve.model.init`). Padding rows (ids >=
base + len(new_tokens) when a larger ``vocab_size`` is asked for) get the ``mean`` rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from eeve.errors import ExpansionError
from eeve.model.init import InitContext, get_init
from eeve.model.split import with_weight

log = logging.getLogger(__name__)


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
        out.weight = nn.Parameter(
            model.get_input_embeddings().weight.detach().clone(), requires_grad=out.weight.requires_grad
        )
    for c in {id(model.config): model.config, id(_text_config(model)): _text_config(model)}.values():
        if hasattr(c, "tie_word_embeddings"):
            c.tie_word_embeddings = False
    if hasattr(model, "get_expanded_tied_weights_keys"):  # transformers 5 caches the tie mapping
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    if tied:
        log.info(
            "untied input and output embeddings (lm_head cloned from embed_tokens; config.tie_word_embeddings=False)"
        )
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
    passes: list[dict] = field(default_factory=list)
    """The passes over the base model the init ran (eeve.model.init.InitMethod; their FLOPs: eeve.training.flops)."""
    method_stats: dict = field(default_factory=dict)
    """What the init method measured (teacher sample size, fitted offsets, losses before/after a fit)."""

    def line(self) -> str:
        return (
            f"expanded vocab {self.base_vocab_size} -> {self.vocab_size} ({self.n_new} new, {self.n_padding} "
            f"padding) init={self.init}: leading-marker skipped {self.n_leading_space_skipped}, byte pieces "
            f"{self.n_with_byte_pieces}, single-piece copies {self.n_single_piece}, fallback-to-mean "
            f"{self.n_fallback_mean}, mean pieces/token "
            f"{self.mean_pieces:.2f}" + "".join(f", {k} {v}" for k, v in self.method_stats.items())
        )


def check_base_vocab(model, base_vocab_size: int) -> None:
    """The base model must be the one the expanded tokenizer was built from (its embedding has exactly the base
    tokenizer's rows); checked before the base runs on any text."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != base_vocab_size:
        raise ExpansionError(
            f"vocab mismatch: model has {rows} embedding rows, base tokenizer has {base_vocab_size} tokens; "
            "build the expanded tokenizer from THIS model's own tokenizer"
        )


def expand_model(
    model,
    base_tokenizer,
    new_tokens,
    base_vocab_size: int,
    init: str = "mean_subwords",
    seed: int = 0,
    *,
    vocab_size: int | None = None,
    untie: bool = True,
    return_summary: bool = False,
    data=None,
):
    """Untie, resize to the expanded vocabulary and initialise the new rows (see module docstring).

    ``new_tokens``: ``{id: token}``, a list of tokens (ids follow ``base_vocab_size``), or the ``new_tokens`` list of
    ``expansion.json`` (dicts with ``id`` and ``token``). ``vocab_size``: total rows (default
    ``base_vocab_size + len(new_tokens)``; larger = padding rows with the mean init). ``data``: an
    ``eeve.model.init_data.InitData`` for init methods that run the base model. Returns the model (modified in
    place), or ``(model, ExpansionSummary)`` with ``return_summary=True``; the summary is also ``model.eeve_expansion``.
    """
    method = get_init(init)
    tok = _to_tokenizers_tokenizer(base_tokenizer)
    _check_sizes(model, tok, base_vocab_size)
    items = _normalise_new_tokens(new_tokens, base_vocab_size)
    V = _total_rows(items, base_vocab_size, vocab_size)
    untied = _untie_for_expansion(model, untie)
    out = model.get_output_embeddings()
    if out is None or getattr(out, "bias", None) is not None:
        raise ExpansionError("expand_model needs a bias-free output head (lm_head)")
    summary = ExpansionSummary(
        init=init, base_vocab_size=base_vocab_size, vocab_size=V, n_new=len(items), untied=untied
    )
    new_in, new_out = _new_rows(model, method, items, tok, base_vocab_size, V, seed, data, summary)
    summary.n_padding = V - base_vocab_size - len(items)
    _append_rows(model, new_in, new_out, V)
    model.eeve_expansion = summary
    log.info(summary.line())
    return (model, summary) if return_summary else model


def _check_sizes(model, tok, base_vocab_size: int) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    tok_size = tok.get_vocab_size(with_added_tokens=True)
    if rows != base_vocab_size or tok_size != base_vocab_size:
        raise ExpansionError(
            f"vocab mismatch: model has {rows} embedding rows, base tokenizer has {tok_size} tokens, expansion "
            f"base_vocab_size={base_vocab_size}; build the expanded tokenizer from THIS model's own tokenizer"
        )


def _total_rows(items: list[tuple[int, str]], base_vocab_size: int, vocab_size: int | None) -> int:
    """Rows of the expanded embedding: ``vocab_size`` if given (at least the largest new id + 1)."""
    min_size = (items[-1][0] + 1) if items else base_vocab_size
    V = vocab_size if vocab_size is not None else max(min_size, base_vocab_size + len(items))
    if V < min_size:
        raise ExpansionError(f"vocab_size={V} is smaller than the largest new id + 1 ({min_size})")
    return V


def _untie_for_expansion(model, untie: bool) -> bool:
    """Untie (or refuse a tied model when ``untie`` is off); True when the model was tied."""
    if embeddings_tied(model):
        if not untie:
            raise ExpansionError(
                "model has tied input/output embeddings and untie_embeddings=false; the EEVE stage "
                "table trains them separately: set model.untie_embeddings=true"
            )
        return untie_embeddings(model)
    if untie:
        untie_embeddings(model)  # make sure config says untied
    return False


def _new_rows(model, method, items, tok, base_vocab_size: int, V: int, seed, data, summary: ExpansionSummary):
    """(input rows, output rows) of ids base_vocab_size..V-1 in float32: the init method's rows for the new tokens,
    the mean rows for padding; the method's statistics go into ``summary``."""
    old_in = model.get_input_embeddings().weight.detach().float()
    old_out = model.get_output_embeddings().weight.detach().float()
    new_in = old_in.mean(0).expand(V - base_vocab_size, -1).clone()  # padding rows
    new_out = old_out.mean(0).expand(V - base_vocab_size, -1).clone()
    if not items:
        return new_in, new_out
    ctx = InitContext(
        old_in,
        old_out,
        items,
        tok,
        base_vocab_size,
        torch.Generator().manual_seed(int(seed)),
        float(getattr(_text_config(model), "initializer_range", 0.02)),
        model=model,
        data=data,
    )
    rows_in, rows_out = method.rows(ctx)
    rel = torch.tensor([i - base_vocab_size for i, _ in items], dtype=torch.long)
    new_in[rel], new_out[rel] = rows_in, rows_out
    for k, v in ctx.stats.items():
        if hasattr(summary, k):
            setattr(summary, k, v)
        else:
            summary.method_stats[k] = v
    return new_in, new_out


def _append_rows(model, new_in: torch.Tensor, new_out: torch.Tensor, V: int) -> None:
    """Append the rows to the input embedding and the head (in their dtype and device) and set the vocab size."""
    # the resized modules keep their class: an embedding that scales its lookup (Gemma 3) must go on scaling
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    dt, dev = inp.weight.dtype, inp.weight.device
    W_in = torch.cat([inp.weight.detach(), new_in.to(dev, dt)], 0)
    W_out = torch.cat([out.weight.detach(), new_out.to(out.weight.device, out.weight.dtype)], 0)
    model.set_input_embeddings(with_weight(inp, W_in, inp.weight.requires_grad))
    model.set_output_embeddings(with_weight(out, W_out, out.weight.requires_grad))
    for c in {id(model.config): model.config, id(_text_config(model)): _text_config(model)}.values():
        c.vocab_size = V
    if hasattr(model, "vocab_size"):
        model.vocab_size = V


# --------------------------------------------------------------------------------------- expanded tokenizer folders
def read_expansion(tokenizer_dir: str | Path) -> dict:
    """``expansion.json`` of an expanded tokenizer folder (written by tokenize.py)."""
    p = Path(tokenizer_dir) / "expansion.json"
    if not p.exists():
        folder = Path(tokenizer_dir)  # outputs/tokenize/<run_name>/tokenizer: tokenize.py run_name=<run_name>
        name = f" run_name={folder.parent.name}" if folder.parent.parent.name == "tokenize" else ""
        raise ExpansionError(
            f"no expanded tokenizer at {tokenizer_dir} (expansion.json missing): run `python "
            f"tokenize.py{name}` first or set tokenizer.path=FOLDER"
        )
    return json.loads(p.read_text(encoding="utf-8"))


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
    raise ExpansionError(
        f"base_tokenizer must be a tokenizers.Tokenizer, a HF fast tokenizer or a path, got {type(tok)}"
    )


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
