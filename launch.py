"""Training entry point: `python launch.py [overrides]`, `python launch.py -m [sweep overrides]`.

Hydra composes conf/ (and experiments/) into one validated config; all work lives in meal.app.
Returns the final student top-1, the objective for Hydra sweepers. A mistake in the command line or
the config ends in one `error:` line and exit status 2; Ctrl-C ends with status 130 (meal.entry).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from meal.entry import quiet_interrupt_at_start, run_hydra_main

if __name__ == "__main__":
    quiet_interrupt_at_start()  # Ctrl-C during the imports below: status 130, no traceback

import hydra
from omegaconf import DictConfig

os.environ.setdefault("MEAL_ROOT", str(Path(__file__).resolve().parent))

from meal.config import register

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one training job described by `cfg` and return the student's final top-1."""
    from meal.app import main as run_main

    return run_main(cfg)


if __name__ == "__main__":
    sys.exit(run_hydra_main(main))
