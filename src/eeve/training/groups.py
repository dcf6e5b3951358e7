"""Parameter groups of a split model: which tensors a stage trains.

``old_input``, ``new_input`` (the embedding's old and new rows), ``old_output``, ``new_output`` (the head's), and
``transformer`` (everything else: decoder layers and the final norm). A stage sets requires_grad exactly for its
groups and builds a fresh optimizer from those tensors alone: frozen rows are not optimizer parameters, so neither
weight decay nor Adam moments can move them.

A model carrying LoRA adapters (eeve.training.adapters) has one more group, ``adapter`` (the ``lora_*`` tensors),
and then a stage that trains ``transformer`` trains the adapter instead: the transformer's own weights stay frozen.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable

from torch import nn

from eeve.config import GROUPS
from eeve.errors import SplitError
from eeve.model.split import _GROUP_RE, _INPUT_NAMES, _UNSPLIT_RE, _clean, is_split

log = logging.getLogger(__name__)

ADAPTER_GROUP = "adapter"
"""Group of the LoRA tensors of an adapted model; it stands in for ``transformer`` when a stage trains that."""
_ADAPTER_RE = re.compile(r"(?:^|\.)lora_")  # PEFT names every LoRA tensor lora_A / lora_B / lora_embedding_* ...


def group_of(param_name: str) -> str:
    """Group of a parameter name of a SPLIT model (wrapper prefixes from checkpointing / compile / FSDP ignored)."""
    name = _clean(param_name)
    if _ADAPTER_RE.search(name):
        return ADAPTER_GROUP
    m = _GROUP_RE.search(name)
    if m:
        side = "input" if m.group(1) in _INPUT_NAMES else "output"
        return f"{m.group(2)}_{side}"
    if _UNSPLIT_RE.search(name):
        raise SplitError(f"{param_name} is an unsplit vocabulary matrix; call eeve.model.split.split_vocab first")
    return "transformer"


def group_parameters(model) -> dict[str, list[nn.Parameter]]:
    """All parameters of a split model by group (by module identity, so any module naming works); the
    ``adapter`` group is present only in a model that carries adapters."""
    if not is_split(model):
        raise SplitError("model is not split; call eeve.model.split.split_vocab(model, base_vocab_size) first")
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    special = {
        id(emb.old.weight): "old_input",
        id(emb.new.weight): "new_input",
        id(head.old.weight): "old_output",
        id(head.new.weight): "new_output",
    }
    out: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        group = special.get(id(p)) or (ADAPTER_GROUP if _ADAPTER_RE.search(name) else "transformer")
        out.setdefault(group, []).append(p)
    return out


def set_trainable(model, groups: Iterable[str]) -> dict[str, int]:
    """requires_grad=True exactly for the parameters of ``groups``; returns trainable parameter count per group.
    In an adapted model, ``transformer`` means its adapter (call this after injecting it: injection freezes all)."""
    groups = tuple(groups)
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise SplitError(f"unknown parameter groups {bad}; choose from {GROUPS}")
    by_group = group_parameters(model)
    if ADAPTER_GROUP in by_group and "transformer" in groups:
        groups = tuple(g for g in groups if g != "transformer") + (ADAPTER_GROUP,)
    counts = {}
    for g, params in by_group.items():
        on = g in groups
        for p in params:
            p.requires_grad_(on)
        counts[g] = sum(p.numel() for p in params) if on else 0
    log.info("trainable parameters: %s", ", ".join(f"{g}={n:,}" for g, n in counts.items() if n))
    return counts
