"""The ensemble's soft labels, computed once and replayed (`method.soft_labels=cached`).

MEAL V2 and KD distil towards the mean of the teachers' softmax outputs. With
``method.soft_labels=online`` (the default) the teachers run on every training step. With
``cached`` the targets of every training (sample, augmentation) pair are computed once, stored on
disk under a key that names the teachers, the data and the augmentation, and gathered at each step,
so a sweep over students, schedules or seeds never runs the teachers again.

What is stored: per entry, the mean teacher softmax at the method's temperature and the mean teacher
logits (the discriminator's teacher rows), or with ``cache_topk=k`` only the k largest probabilities
and their classes. The temperature is part of the key (a KD run at T=4 and a MEAL V2 run at T=1 use
two caches). See :mod:`meal.softlabels.spec` for the layouts and the key, :mod:`meal.softlabels.store`
for the on-disk format; ``python -m meal.softlabels <hydra overrides>`` builds a cache ahead of a
sweep, and runs build it on first use.
"""

from meal.softlabels.source import CachedSoftLabels, SoftLabels, open_or_build
from meal.softlabels.spec import FORMAT, CacheSpec, cache_spec
from meal.softlabels.store import CacheStore
from meal.softlabels.targets import OnlineSoftLabels, SoftTargets, ensemble_targets

__all__ = [
    "FORMAT",
    "CacheSpec",
    "CacheStore",
    "CachedSoftLabels",
    "OnlineSoftLabels",
    "SoftLabels",
    "SoftTargets",
    "cache_spec",
    "ensemble_targets",
    "open_or_build",
]
