"""Delta exports: only what a stage changed, with row offsets; a chain of deltas applied to the base model gives
every stage's full export bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_train import BASE, compose_cfg

from eeve.errors import ExportError
from eeve.model.delta import SafetensorsWeights, apply_deltas, compute_delta, read_delta, write_delta


def test_rows_blocks_offsets_and_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"emb": torch.randn(10, 4, generator=g), "norm": torch.ones(4), "w": torch.randn(3, 4, generator=g)}
    one = {
        "emb": torch.cat([base["emb"], torch.randn(6, 4, generator=g)]),
        "norm": base["norm"].clone(),
        "w": base["w"].clone(),
        "extra": torch.zeros(2, dtype=torch.bfloat16),
    }  # expansion: 6 new rows
    two = {k: v.clone() for k, v in one.items()}
    two["emb"][12] += 1  # one new row
    two["emb"][3] -= 1  # and one old row
    two["w"] = two["w"].double()  # a dtype change alone: recorded in the metadata, no tensor stored
    del two["extra"]  # a tensor that goes away
    tensors, meta = compute_delta(base, one)
    assert set(tensors) == {"emb", "extra"} and meta["offsets"]["emb"] == 10 and tensors["emb"].shape == (6, 4)
    tensors, meta = compute_delta(one, two)
    assert meta["offsets"] == {"emb": 3} and tensors["emb"].shape == (10, 4)  # rows 3..12
    assert meta["dtypes"]["w"] == "float64" and "extra" not in meta["dtypes"]
    write_delta(tmp_path / "1.safetensors", base, one, {"stage": 1})
    write_delta(tmp_path / "2.safetensors", one, two)
    for n, want in ((1, one), (2, two)):
        got = apply_deltas(base, [tmp_path / f"{k}.safetensors" for k in range(1, n + 1)])
        assert got.keys() == want.keys()
        assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(ExportError, match="wrong base or order"):
        apply_deltas(
            {"emb": torch.zeros(2, 4), "norm": torch.ones(4), "w": torch.zeros(3, 4)}, [tmp_path / "1.safetensors"]
        )
    with pytest.raises(ExportError, match="order"):
        apply_deltas(base, [tmp_path / "2.safetensors"])
    with pytest.raises(ExportError, match="no delta at"):
        read_delta(tmp_path)


@pytest.mark.slow
def test_stage_deltas_rebuild_every_export_bit_for_bit(expanded_tokenizer, packed_cache, tmp_path):
    """Stages 1 -> 2 -> 5 -> 7 (LoRA) with export.delta=true: each delta holds only what its stage changed (the
    first one also the expansion's new rows), and base + deltas == each stage's full export, bit for bit."""
    from eeve.model.load import load_base_model
    from eeve.training.stages import run_stage

    chain = ["stages=[1,2,5,7]", "export.delta=true"]
    for n in (1, 2, 5, 7):
        run_stage(
            compose_cfg(
                tmp_path,
                expanded_tokenizer,
                packed_cache,
                f"stage={n}",
                *chain,
                *(["stage.adapter=lora"] if n == 7 else []),
            ),
            n,
        )
    cfg = compose_cfg(tmp_path, expanded_tokenizer, packed_cache)
    base = load_base_model(cfg.model).state_dict()  # model=tiny: the seeded random-init base, 32000 rows
    emb, head = "model.embed_tokens.weight", "lm_head.weight"
    stored = {}
    for n in (1, 2, 5, 7):
        tensors, meta = read_delta(tmp_path / f"stage{n}")
        assert meta["stage"] == n and meta["base_vocab_size"] == BASE
        stored[n] = {k: meta["offsets"][k] for k in tensors}
    assert stored[1] == {emb: BASE, head: BASE}  # stage 1's new input rows, and the new output rows' init
    assert stored[2] == {head: BASE}
    assert stored[5] == {emb: BASE, head: 0}  # old output rows trained too: the whole head
    assert emb not in stored[7] and head not in stored[7] and all(v == 0 for v in stored[7].values())
    assert len(stored[7]) == 2 * 7  # the merged q/k/v/o/gate/up/down of both layers; the norms are unchanged
    for i, n in enumerate((1, 2, 5, 7)):
        rebuilt = apply_deltas(base, [tmp_path / f"stage{k}" for k in (1, 2, 5, 7)[: i + 1]])
        full = SafetensorsWeights(tmp_path / f"stage{n}")
        assert rebuilt.keys() == set(full)
        for k in full:
            assert rebuilt[k].dtype == full[k].dtype and torch.equal(rebuilt[k], full[k]), (n, k)
