"""meal's Optuna search sweeper where Hydra's plugin loader looks for it.

Hydra instantiates sweepers only from classes defined in the ``hydra_plugins`` package; the work is
done by :class:`meal.search.sweeper.OptunaSearchSweeper`. The presets in conf/hydra/sweeper/ name
this class (``_target_: hydra_plugins.meal_search.optuna_sweeper.OptunaSweeper``).
"""

from __future__ import annotations

from meal.search.sweeper import OptunaSearchSweeper


class OptunaSweeper(OptunaSearchSweeper):
    """The sweeper ``hydra/sweeper=optuna_tpe`` and ``hydra/sweeper=optuna_random`` select."""
