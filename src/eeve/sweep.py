"""After a Hydra multirun of train.py (``python train.py -m init=a,b``): one table of every job against the base.

``SweepTable`` is a Hydra callback (conf/config.yaml, ``hydra.callbacks.sweep_table``): when the sweep ends it prints
eeve.compare's table for the sweep folder and writes ``compare.md`` and ``compare.png`` there, as
``python -m eeve.compare <sweep dir> --out <sweep dir>`` would.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from eeve.errors import EEVEError


class SweepTable(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("mode") == "plan":  # memory plans train nothing: no runs to compare
            return
        from eeve.compare import compare  # matplotlib and the evaluation stack: only once a sweep has ended

        sweep = Path(config.hydra.sweep.dir)
        try:
            table, png = compare([str(sweep)], sweep)
        except (EEVEError, OSError) as e:
            print(f"note: no combined table of the sweep ({str(e).splitlines()[0]})")
            return
        print(f"\nsweep {sweep}: every job against the base\n\n{table}\n\ntable: {sweep / 'compare.md'}   plot: {png}")
