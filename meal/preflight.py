"""Checks before work: what the config, the student's structure and the teacher set's declared
architectures can tell, checked before any data is loaded, any teacher is trained or loaded, or any
file is written.

The models are built on the meta device (shapes only: no memory, no weights, no files), so checking
the student's block outputs against `method.out_layer` takes milliseconds even for an ImageNet network,
where finding the mistake after the missing zoo teachers were trained would take hours.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from meal.config.validate import validate
from meal.data import check_data_config
from meal.errors import ConfigError, MealError
from meal.methods.registry import method_class
from meal.models import build_model
from meal.teachers import member_name

log = logging.getLogger(__name__)


def check_before_work(cfg: Any) -> None:
    """Validate `cfg` and check its method against the student's and the teachers' structure.

    Raises ConfigError (naming the key and the fix) on the first violation.
    """
    validate(cfg)
    check_data_config(cfg.data)
    method = method_class(cfg.method.name)
    members = list(cfg.teachers.members) if method.uses_teachers else []
    if method.uses_teachers and not members:
        raise ConfigError(
            "teachers",
            f"method '{method.name}' needs teachers but the set '{cfg.teachers.name}' is empty",
            "choose a teacher set, e.g. teachers=fmnist_trio, or method=ce",
        )
    d = cfg.data
    try:
        with torch.device("meta"):
            student = build_model(
                cfg.student.arch,
                d.num_classes,
                d.in_channels,
                d.image_size,
                taps=list(cfg.student.taps) if cfg.student.taps is not None else None,
                key="student.arch",
            )
            teachers = [
                (
                    member_name(m),
                    build_model(
                        m.arch,
                        d.num_classes,
                        d.in_channels,
                        d.image_size,
                        taps=list(m.taps) if m.taps is not None else None,
                        key=f"teachers.members[{i}].arch",
                    ),
                )
                for i, m in enumerate(members)
            ]
    except MealError:
        raise
    except Exception as exc:  # an architecture whose constructor needs real tensors: the method checks later
        log.debug(
            "structure checks deferred to the method: %s cannot be built on the meta device (%s)", cfg.student.arch, exc
        )
        return
    method.check_models(cfg.method, student, teachers)
