"""Build the expanded tokenizer (EEVE steps 1-7): `python tokenize.py [overrides]`.

This file's name shadows the standard library's `tokenize` whenever the repository root is on sys.path
(`python train.py`, `python -m pytest`, ...): `inspect` imports `tokenize` and would get this file.
So when imported as a module it *becomes* the standard library module; only run as a script does it
build a tokenizer.
"""

if __name__ != "__main__":  # imported as `tokenize`: stand in for the standard library module
    import importlib.util as _util
    import sys as _sys
    import sysconfig as _sysconfig

    _spec = _util.spec_from_file_location(__name__, _sysconfig.get_path("stdlib") + "/tokenize.py")
    _stdlib = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _stdlib  # `import tokenize` returns what sys.modules holds after this runs
    _spec.loader.exec_module(_stdlib)
    globals().update(_stdlib.__dict__)
else:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # run from a checkout without install

    import hydra
    from omegaconf import DictConfig

    from eeve.cli import fail, run_hydra
    from eeve.config import TokenizeConfig
    from eeve.demo.paths import use_demo_data
    from eeve.errors import EEVEError
    from eeve.tokenizer.run import run_from_config

    @hydra.main(config_path="conf", config_name="tokenize", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        try:
            run_from_config(cfg, prepare=use_demo_data)
        except EEVEError as e:  # bad input: one line, no traceback
            fail(str(e))

    run_hydra(main, TokenizeConfig)
