"""Defaults live in one place: the schema (src/eeve/config.py). The YAML under conf/ agrees with it.

The rule, checked here:
  - The files that stand for "the defaults" — conf/config.yaml, conf/tokenize.yaml and conf/trainer/default.yaml —
    may restate a schema default (to carry a comment), but every value they set must EQUAL the schema's default.
    Interpolations (``${...}``: run folders, the model's run name) are exempt: a dataclass cannot hold them, and
    ``{}`` restating a default is a no-op.
  - Every other group file (conf/stage/*, conf/data/*, conf/model/*, conf/trainer/ddp|fsdp, and the global ones:
    conf/experiment/*, conf/recipe/*, conf/demo/*) is a choice: it may set its own values, but every key it
    sets must exist in the schema with the right type (it is merged onto the schema here; Hydra does the same).
  - A value shared by every option of a group (e.g. the English guard ``stage.max_regression: {en: 0.01}`` of
    stages 1-7) is a default: it goes into the schema, not into each file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from eeve.config import DataConfig, EvalConfig, ModelConfig, StageConfig, TokenizeConfig, TrainConfig, TrainerConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_FILES = {"config.yaml": TrainConfig, "tokenize.yaml": TokenizeConfig, "trainer/default.yaml": TrainerConfig}
GROUPS = {"stage": StageConfig, "data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


def composed(*overrides: str) -> TrainConfig:
    """conf/config.yaml composed by Hydra with ``overrides`` (group choices quoted as train.py does), checked."""
    from hydra import compose, initialize_config_dir

    from eeve.config import register_configs, to_train_config

    register_configs()
    overrides = tuple(f"stage='{o[6:]}'" if o.startswith("stage=") else o for o in overrides)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["paths.root=.", "paths.run_dir=.", "paths.cache_dir=.", *overrides])
    return to_train_config(cfg)


def own_values(path: Path) -> dict:
    """The keys a YAML file sets itself (its defaults list and Hydra's own settings left out), uninterpolated."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in node.items() if k not in ("defaults", "hydra")}


def schema_defaults(schema) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)


def differences(own: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose value in ``own`` (a YAML file's values) is not the schema's default."""
    out = []
    for key, value in own.items():
        here, default = f"{prefix}{key}", defaults.get(key, "<no such key>")
        if isinstance(value, dict) and isinstance(default, dict):  # {} restates a default: merging it changes nothing
            out += differences(value, default, here + ".")
        elif not (isinstance(value, str) and "${" in value) and value != default:
            out.append(f"{here}: yaml {value!r} vs schema {default!r}")
    return out


@pytest.mark.parametrize("name", sorted(DEFAULT_FILES))
def test_default_files_equal_the_schema_defaults(name):
    assert differences(own_values(CONF / name), schema_defaults(DEFAULT_FILES[name])) == []


def test_the_check_sees_a_drifted_default(tmp_path):
    drifted = tmp_path / "default.yaml"
    text = (CONF / "trainer" / "default.yaml").read_text()
    drifted.write_text(text.replace("val_every_n_steps: 15", "val_every_n_steps: 30"))
    assert differences(own_values(drifted), schema_defaults(TrainerConfig)) == [
        f"val_every_n_steps: yaml 30 vs schema {TrainerConfig().val_every_n_steps}"
    ]


@pytest.mark.parametrize("path", sorted(p.relative_to(CONF).as_posix() for p in CONF.glob("*/*.yaml")))
def test_every_group_file_merges_onto_the_schema(path):
    """Every key a group file sets exists in the schema with a value of its type (``# @package _global_`` files:
    the top-level schema)."""
    group, text = path.split("/")[0], (CONF / path).read_text()
    schema = TrainConfig if "@package _global_" in text else GROUPS[group]
    own = own_values(CONF / path)
    merged = OmegaConf.merge(OmegaConf.structured(schema), own)
    assert set(own) <= set(merged)


def test_composed_defaults_are_the_schemas():
    cfg = composed()
    assert cfg.trainer == TrainerConfig()  # trainer=default changes nothing
    assert cfg.stage.max_regression == StageConfig().max_regression == {"en": 0.01}
    assert cfg.stages == TrainConfig().stages


def test_the_demo_settings_stay_in_the_demo():
    """conf/demo/ applies to the demo's data with the demo's models only: a user's model and data get the schema's
    trainer and no local tasks."""
    demo = composed("data=demo", "model=tiny_pretrained")
    assert demo.trainer.val_every_n_steps == 20 and demo.eval.bytes == 40_000
    assert demo.eval.tasks == ["eeve_nextsent_ko", "eeve_nextsent_en"]
    assert composed("data=demo", "model=tiny").trainer == TrainerConfig()  # the tests' debug model: no demo timing
    user = composed("data=demo", "model=solar")  # a user's model on the demo's text
    assert user.trainer == TrainerConfig() and user.eval.tasks == [] and user.eval.bytes == EvalConfig().bytes


# --------------------------------------------------------------------------- references in conf/ comments
SRC = Path(__file__).resolve().parents[1] / "src"
REFERENCE = re.compile(r"(?:src/)?eeve(?:[./][A-Za-z_][A-Za-z0-9_]*)+/?")


def references(text: str) -> list[str]:
    """``eeve.a.b``, ``eeve/a/b.py`` and ``src/eeve/...`` mentioned in the comments of a YAML file."""
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    return [m.group(0).rstrip("./") for c in comments for m in REFERENCE.finditer(c)]


def resolves(ref: str) -> bool:
    """A path under src/ that exists, or a dotted module (then names defined in it, one level into a class)."""
    import ast

    if "/" in ref:
        return (SRC / ref.removeprefix("src/")).exists()
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            break
    else:
        return False
    body = ast.parse(module.read_text(encoding="utf-8")).body
    for name in parts[cut:]:
        defs = {n.name: n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        names = {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        names |= {n.target.id for n in body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        if name not in defs and name not in names:
            return False
        body = getattr(defs.get(name), "body", [])
    return True


def test_references_in_conf_comments_resolve():
    refs = {f"{p.relative_to(CONF)}: {r}": r for p in sorted(CONF.rglob("*.yaml")) for r in references(p.read_text())}
    assert len(refs) > 10  # the comments do name modules: the pattern finds them
    assert [where for where, r in refs.items() if not resolves(r)] == []


def test_a_stale_reference_is_found():
    stale = "# see eeve/data.py, eeve.expansion.expand_model and src/eeve/distributed.py; eeve.config.StageConfig.lr\n"
    assert [r for r in references(stale) if not resolves(r)] == [
        "eeve/data.py",
        "eeve.expansion.expand_model",
        "src/eeve/distributed.py",
    ]
    assert resolves("eeve.config.StageConfig.max_regression") and resolves("src/eeve/training/distributed.py")


def test_teacher_sample_grows_with_the_hidden_size():
    """mass_first_piece's least-squares offset direction needs more aligned positions than hidden dimensions: the
    default teacher sample is twice the hidden size (rounded up to 256, at least 1,024); a set value is kept."""
    from eeve.config import InitOptions

    o = InitOptions()
    assert o.teacher_tokens is None
    assert [o.teacher_sample(h) for h in (64, 576, 640, 4096)] == [1024, 1280, 1280, 8192]
    assert InitOptions(teacher_tokens=300).teacher_sample(4096) == 300
