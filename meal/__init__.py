"""meal: ensemble knowledge distillation (MEAL, MEAL V2) as a Hydra experiment sweeper."""

__version__ = "0.1.0"
