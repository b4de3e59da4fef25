"""A run must do what it says: refuse data that would train on nothing or evaluate on nothing."""

from __future__ import annotations

from typing import Any

from meal.errors import ConfigError


def _training_key(cfg: Any) -> tuple[str, str]:
    """The key that emptied the training set, and how to fix it."""
    if cfg.val_split > 0:
        return "data.val_split", "use a smaller data.val_split (or more training images)"
    if cfg.train_subset is not None:
        return "data.train_subset", "use a larger data.train_subset"
    return "data.root", "point data.root at a dataset with training images"


def check_not_empty(cfg: Any, data: Any) -> None:
    """Refuse a training set that gives no step, an empty test set, or a validation split that rounds to none.

    `cfg` is the ``data`` config and `data` the :class:`~meal.data.DataBundle` built from it.
    """
    held_out = data.val.num_samples if data.val is not None else 0
    total = data.train.num_samples + held_out
    if len(data.train) == 0 or data.train.num_samples == 0:
        key, fix = _training_key(cfg)
        raise ConfigError(
            key,
            f"leaves no training images ({held_out} of {total} are held out for validation): "
            "the run would train nothing",
            fix,
        )
    if cfg.val_split > 0 and held_out == 0:
        raise ConfigError(
            "data.val_split",
            f"{cfg.val_split} of {total} training images rounds to no image: the run would validate on nothing",
            "use a larger data.val_split, or 0 for no validation set",
        )
    if data.test.num_samples == 0:
        key = "data.test_subset" if cfg.test_subset is not None else "data.root"
        raise ConfigError(
            key,
            "leaves no test images: the run would evaluate on nothing",
            "use a larger data.test_subset, or a dataset with test images",
        )
