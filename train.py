"""Seven-stage EEVE training: `python train.py stage=3 model=solar`, `python train.py stage=all`.

Each stage trains one parameter group set (conf/stage/<N>.yaml) of the vocabulary-expanded model, starting
from the previous stage's export (stage 1: the base model expanded with the tokenizer from `tokenize.py`), and
exports a standard Hugging Face model to outputs/<run_name>/stage<N>/. TensorBoard: outputs/<run_name>/tensorboard.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # runnable from a checkout without `pip install -e .`

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eeve.cli import check_argv, fail, hydra_error_line, single_lightning_log, swept_name  # noqa: E402


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from eeve.config import ConfigError, to_train_config
    from eeve.corpus import CorpusError
    from eeve.expansion import ExpansionError
    from eeve.export import ExportError
    from eeve.module import NonFiniteLossError
    from eeve.stages import StageError, load_stage_config, run_stage, summary_table

    single_lightning_log()
    try:
        cfg = to_train_config(dcfg)
        hc = HydraConfig.get()
        # The basic launcher runs jobs in this process; Lightning would re-launch the script for its extra ranks
        # and each rank would run the whole sweep. Launchers that start one job per allocation (submitit) are fine.
        launcher = hc.runtime.choices.get("hydra/launcher", "basic")
        if hc.mode == RunMode.MULTIRUN and launcher == "basic" and (
                cfg.trainer.strategy != "single" or cfg.trainer.num_nodes > 1):
            raise ConfigError("Hydra multirun (-m) with a multi-process strategy re-runs the sweep in every rank: "
                              "launch one job per configuration (see README, 'Multi-GPU and SLURM')")
        # Each stage: conf/stage/<N>.yaml + schedule["<N>"] (experiment files) + the command line's stage.* overrides.
        stage_overrides = [o for o in hc.overrides.task if o.startswith("stage.")]
        results = []
        for n in range(1, 8) if cfg.stage.number == 0 else [cfg.stage.number]:
            base = cfg.stage if cfg.stage.number == n else ROOT / "conf" / "stage" / f"{n}.yaml"
            cfg.stage = load_stage_config(base, n, cfg.schedule, stage_overrides)
            results.append(run_stage(cfg, n))
    except (ConfigError, CorpusError, StageError, NonFiniteLossError, ExpansionError, ExportError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print("\n" + summary_table(results))
        print(f"\nexports: {cfg.paths.run_dir}/stage<N>/   TensorBoard: tensorboard --logdir {cfg.paths.run_dir}")


if __name__ == "__main__":
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("swept", swept_name)
    sys.argv[1:] = check_argv(sys.argv[1:])
    # Hydra prints composition errors over several lines; have it raise instead, and report them in one line.
    # Errors of the run itself are reported in one line inside main().
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from hydra.errors import HydraException

    try:
        main()
    except HydraException as e:
        fail(hydra_error_line(e))
    except OSError as e:  # Hydra creates the run dir (and .hydra/, train.log) before main() runs
        where = e.filename or "the run directory"
        fail(f"cannot write {where} ({e.strerror or type(e).__name__}): set hydra.run.dir=DIR (or run_name=NAME) "
             "to a writable folder")
