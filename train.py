"""Seven-stage EEVE training: `python train.py stage=3 model=solar`, `python train.py stage=all`.

Each stage trains one set of parameter groups (conf/stage/<name>.yaml) of the vocabulary-expanded model, starting
from the previous stage's export (the first stage: the base model expanded with the tokenizer from `tokenize.py`),
and exports a standard Hugging Face model to outputs/<run_name>/stage<N>/. `stage=all` runs the stages the config
lists (`stages:`), each composed exactly as `stage=<name>` with the same command line. TensorBoard:
outputs/<run_name>/tensorboard.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # runnable from a checkout without `pip install -e .`

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eeve.cli import (  # noqa: E402
    check_argv,
    compose_stage_numbers,
    fail,
    run_hydra,
    single_lightning_log,
    swept_name,
)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # torch, Lightning and the training code load once the config composed: a bad command line answers at once
    from eeve.card import write_stage_card
    from eeve.config import to_train_config
    from eeve.data.language_check import check_languages
    from eeve.errors import ConfigError, EEVEError
    from eeve.eval.stage_eval import read_metrics
    from eeve.eval.stage_line import stage_done_line
    from eeve.eval.table import eval_table
    from eeve.eval.training_run import StageEvaluation
    from eeve.preflight import check_train
    from eeve.training.plan import plan_stage, plan_table
    from eeve.training.progress import quiet_lightning
    from eeve.training.recipe import prepare_recipe
    from eeve.training.stages import apply_schedule, run_stage, summary_table

    single_lightning_log()
    quiet_lightning()
    try:
        cfg = to_train_config(dcfg)
        hc = HydraConfig.get()
        # The basic launcher runs jobs in this process; Lightning would re-launch the script for its extra ranks
        # and each rank would run the whole sweep. Launchers that start one job per allocation (submitit) are fine.
        launcher = hc.runtime.choices.get("hydra/launcher", "basic")
        if (
            hc.mode == RunMode.MULTIRUN
            and launcher == "basic"
            and (cfg.trainer.strategy != "single" or cfg.trainer.num_nodes > 1)
        ):
            raise ConfigError(
                "Hydra multirun (-m) with a multi-process strategy re-runs the sweep in every rank: "
                "launch one job per configuration (see README, 'Multi-GPU and SLURM')"
            )
        task = list(hc.overrides.task)
        stage_overrides = [o for o in task if o.startswith("stage.")]
        chosen = hc.runtime.choices["stage"]
        numbers = compose_stage_numbers(cfg.stages)  # the stage order, fixed once for the whole run
        if cfg.mode != "plan":  # paths, tokenizer vs model, output folder, tasks: before any model is loaded
            cfg.stage_numbers = numbers
            check_train(cfg, numbers[str(cfg.stages[0])] if chosen == "all" else cfg.stage.number)
        if cfg.mode == "train":  # the tokenizer fits the data's target language (a wrong one stops here, in one line)
            check_languages(cfg)
        results = []
        for name in cfg.stages if chosen == "all" else [chosen]:
            if chosen == "all":  # compose this stage exactly as `stage=<name>` with the same command line
                others = [o for o in task if not o.startswith("stage=")]
                cfg = to_train_config(compose(config_name="config", overrides=[*others, f"stage='{name}'"]))
            cfg.stage_numbers = numbers
            cfg.stage = apply_schedule(cfg.stage, str(name), cfg.schedule, stage_overrides, cfg.recipe.stage)
            if cfg.mode == "plan":  # arithmetic only: no weights, no data, nothing trained
                results.append(plan_stage(cfg))
                continue
            cfg.stage = prepare_recipe(cfg, str(name))  # the base tokenizer (no_expansion), the budget's tokens
            results.append(run_stage(cfg, cfg.stage.number, evaluation=StageEvaluation))
            write_stage_card(cfg, cfg.stage.number)  # README.md: a model card from the run's files (eeve.card)
            if _rank_zero():  # BPB per language against the base, the guard's status
                print(stage_done_line(results[-1], read_metrics(Path(cfg.paths.run_dir) / "stage0")), flush=True)
    except (EEVEError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if cfg.mode == "plan":
        print(plan_table(results))
        return
    if _rank_zero():
        base = read_metrics(Path(cfg.paths.run_dir) / "stage0")  # the base model (stage 0), when evaluated
        print("\n" + (eval_table(results, base) if base is not None else summary_table(results)))
        print(f"\nexports: {cfg.paths.run_dir}/stage<N>/   TensorBoard: tensorboard --logdir {cfg.paths.run_dir}")


def _rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


if __name__ == "__main__":
    from omegaconf import OmegaConf

    from eeve.config import TrainConfig

    OmegaConf.register_new_resolver("swept", swept_name)
    sys.argv[1:] = check_argv(sys.argv[1:], ROOT / "conf")
    run_hydra(main, TrainConfig)
