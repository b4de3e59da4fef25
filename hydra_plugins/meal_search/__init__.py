"""meal's Hydra plugins: the Optuna search sweeper (see :mod:`meal.search`)."""
