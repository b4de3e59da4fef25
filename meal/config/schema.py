"""Structured-config schemas for every config group.

Each group's YAML options extend one of these dataclasses (registered in Hydra's
ConfigStore by :func:`register_schemas`), so a misspelt key, a value of the
wrong type or a value outside a choice key's allowed values (the :class:`~meal.core.choice.Choice`
types below) fails at composition time with the key's full name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from meal.config.ranges import ranged
from meal.core.choice import Choice
from meal.tracking.config import LoggerConfig

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2023, 0.1994, 0.2010]


# The allowed values of the choice keys below; a value outside them fails at composition, naming the key.
class Augment(Choice):
    """`data.augment`: pad-crop and flip for in-memory data sets, random-resized-crop + flip for image
    folders (each data set accepts its own subset, :mod:`meal.data.registry`)."""

    none = "none"
    flip = "flip"
    pad_crop = "pad_crop"
    pad_crop_flip = "pad_crop_flip"
    random_resized_crop_flip = "random_resized_crop_flip"


class OptimizerName(Choice):
    """`optim.name`, `teachers.training.optim` and the discriminators' `method.d_optim`."""

    sgd = "sgd"
    adamw = "adamw"


class ScheduleName(Choice):
    """`schedule.name` and `teachers.training.schedule` (see :class:`ScheduleConfig`)."""

    meal_step = "meal_step"
    multistep = "multistep"
    cosine = "cosine"
    constant = "constant"


class AdversarialMode(Choice):
    """`method.adversarial` (:mod:`meal.methods.adversarial`)."""

    grl = "grl"
    joint = "joint"
    alternating = "alternating"
    none = "none"


class DiscriminatorSchedule(Choice):
    """`method.d_schedule`: the discriminators' LR follows the student's schedule, or stays at `d_lr`."""

    student = "student"
    constant = "constant"


class SoftLabelSource(Choice):
    """`method.soft_labels`: the teachers on every step, or a cache of their outputs (:mod:`meal.softlabels`)."""

    online = "online"
    cached = "cached"


class CacheDtype(Choice):
    """`method.cache_dtype`: the storage type of cached soft labels."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class Precision(Choice):
    """`trainer.precision` and `trainer.teacher_precision` (auto: bf16 on CUDA, fp32 on the CPU)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Objective(Choice):
    """`trainer.objective` (:mod:`meal.objective`)."""

    auto = "auto"
    val = "val"
    test = "test"


class ProgressMode(Choice):
    """`trainer.progress`: auto (a bar on a terminal, log lines otherwise), bar, log or off."""

    auto = "auto"
    bar = "bar"
    log = "log"
    off = "off"


class NonFinitePolicy(Choice):
    """`trainer.nonfinite`: what a non-finite loss does: stop the run, or skip the step."""

    stop = "stop"
    skip = "skip"


@dataclass
class DataConfig:
    """Dataset, split, batching and augmentation (`data=` group)."""

    name: str = MISSING
    root: str | None = None
    download: Any = "auto"  # auto | true | false (checked in meal.data): auto downloads only without data.root
    num_classes: int = ranged(10, ge=1)
    in_channels: int = ranged(3, ge=1)
    image_size: int = ranged(32, ge=1)
    train_subset: int | None = ranged(None, ge=1)
    test_subset: int | None = ranged(None, ge=1)
    val_split: float = ranged(0.0, ge=0, lt=1)
    batch_size: int = ranged(128, ge=1)
    eval_batch_size: int = ranged(1000, ge=1)
    workers: int = ranged(0, ge=0)
    augment: Augment = Augment.none
    pad: int = ranged(4, ge=0)
    normalize: bool = True
    mean: list[float] = ranged(factory=lambda: list(CIFAR_MEAN))
    std: list[float] = ranged(factory=lambda: list(CIFAR_STD), gt=0)
    train_size: int = ranged(1024, ge=1)
    test_size: int = ranged(256, ge=1)
    resize: int = ranged(256, ge=1)
    on_device: bool = True


@dataclass
class ModelConfig:
    """One network: a zoo name or ``torchvision.<name>`` (`student=` group)."""

    arch: str = MISSING
    pretrained: str | None = None
    require_pretrained: bool = False  # a configuration that only makes sense from trained weights sets it
    taps: list[str] | None = None


@dataclass
class TeacherMember:
    """One teacher: an architecture and a checkpoint (a file, or the zoo entry for `seed`)."""

    arch: str = MISSING
    checkpoint: str | None = None
    seed: int = ranged(0, ge=0, lt=2**32)
    name: str | None = None
    taps: list[str] | None = None


@dataclass
class TeacherTraining:
    """The recipe a teacher set asks for: how its zoo teachers were (or are to be) trained.

    A zoo teacher is used only when its sidecar records the same recipe (epochs, optimizer, LR,
    schedule, training subset); `recipe` names it and is part of the zoo file name
    (``<arch>-s<seed>-<recipe>.pt``; null keeps ``<arch>-s<seed>.pt``). A missing teacher is trained
    with it when `teachers.train_missing` is on.
    """

    epochs: int = ranged(10, ge=1)
    lr: float = ranged(0.05, gt=0)
    optim: OptimizerName = OptimizerName.sgd
    schedule: ScheduleName = ScheduleName.cosine
    train_subset: int | None = ranged(None, ge=1)
    recipe: str | None = None


@dataclass
class TeachersConfig:
    """A named teacher set (`teachers=` group)."""

    name: str = "none"
    members: list[TeacherMember] = field(default_factory=list)
    train_missing: bool = False
    training: TeacherTraining = field(default_factory=TeacherTraining)


@dataclass
class MethodConfig:
    """Base of every method's schema (`method=` group)."""

    name: str = MISSING


@dataclass
class AdversarialConfig:
    """Discriminator settings shared by MEAL v1 and MEAL V2."""

    adversarial: AdversarialMode = AdversarialMode.grl
    d_lr: float = ranged(1e-3, gt=0)
    d_optim: OptimizerName = OptimizerName.sgd
    d_momentum: float = ranged(0.9, ge=0, lt=1)
    d_weight_decay: float = ranged(5e-4, ge=0)
    d_betas: list[float] = ranged(factory=lambda: [0.5, 0.999], ge=0, lt=1)
    d_schedule: DiscriminatorSchedule = DiscriminatorSchedule.student
    K: int = ranged(2, ge=1)
    d_min_hidden: int = ranged(1, ge=1)
    d_final_relu: bool = False


@dataclass
class SoftLabelConfig:
    """Where the ensemble's soft labels come from (MEAL V2 and KD)."""

    soft_labels: SoftLabelSource = SoftLabelSource.online
    cache_dir: str | None = None
    cache_dtype: CacheDtype = CacheDtype.float16
    cache_topk: int | None = ranged(None, ge=1)
    cache_crops: int = ranged(16, ge=1)


@dataclass
class OptimConfig:
    """Student optimizer (`optim=` group): sgd or adamw."""

    name: OptimizerName = OptimizerName.sgd
    lr: float = ranged(0.1, gt=0)
    momentum: float = ranged(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = ranged(5e-4, ge=0)
    betas: list[float] = ranged(factory=lambda: [0.9, 0.999], ge=0, lt=1)
    eps: float = ranged(1e-8, gt=0)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (`schedule=` group), applied per step as a multiplier of `optim.lr`.

    meal_step: x1 for epochs [0, 150a), x0.1 for [150a, 250a), x0.01 for [250a, 350a), run length 350a.
    multistep: x decay at each epoch in `milestones`. cosine: linear warmup then cosine to `min_lr`.
    constant: x1 (after an optional warmup).
    """

    name: ScheduleName = ScheduleName.meal_step
    factor: float = ranged(1.0, gt=0)
    milestones: list[float] = ranged(factory=list, ge=0)
    decay: float = ranged(0.1, gt=0)
    warmup_epochs: float = ranged(0.0, ge=0)
    min_lr: float = ranged(0.0, ge=0)


@dataclass
class TrainerConfig:
    """Training loop settings (`trainer=` group)."""

    epochs: int | None = ranged(None, ge=1)
    max_steps: int | None = ranged(None, ge=1)
    device: str = "auto"
    precision: Precision = Precision.auto
    teacher_precision: Precision = Precision.auto
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    threads: int | None = ranged(None, ge=1)
    eval_every: int = ranged(1, ge=1)
    ckpt_every_steps: int | None = ranged(None, ge=1)
    keep_best: bool = True
    objective: Objective = Objective.auto  # what launch.py returns and best.pt follows (meal.objective)
    log_every_steps: int = ranged(50, ge=1)
    progress: ProgressMode = ProgressMode.auto
    grad_clip: float | None = ranged(None, gt=0)
    nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    max_skipped_steps: int = ranged(10, ge=0)
    export_to_zoo: bool = False
    zoo_recipe: str | None = None  # recipe name in the exported zoo file name: <arch>-s<seed>-<recipe>.pt
    sync_batchnorm: bool = False  # on several processes: BatchNorm statistics of the whole global batch


@dataclass
class PathsConfig:
    """Where things live (`paths=` group). Nothing depends on the working directory."""

    root_dir: str = MISSING
    output_dir: str = MISSING
    data_dir: str = MISSING
    zoo: str = MISSING
    cache_dir: str = MISSING


@dataclass
class ClusterConfig:
    """Site data for the Slurm launcher (`cluster=` group)."""

    name: str = "localhost"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    setup: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    zoo: str | None = None


@dataclass
class ResourcesConfig:
    """What one job asks for (`resources=` group)."""

    name: str = "cpu"
    nodes: int = ranged(1, ge=1)
    gpus_per_node: int = ranged(0, ge=0)
    tasks_per_node: int = ranged(1, ge=1)
    cpus_per_task: int = ranged(2, ge=1)
    mem_gb: int = ranged(4, ge=1)
    timeout_min: int = ranged(60, ge=1)
    array_parallelism: int = ranged(16, ge=1)
    signal_delay_s: int = ranged(120, ge=0)
    max_num_timeout: int = ranged(3, ge=0)


@dataclass
class MealConfig:
    """The whole run: one field per config group plus run identity."""

    data: DataConfig = MISSING
    student: ModelConfig = MISSING
    teachers: TeachersConfig = MISSING
    method: Any = MISSING
    optim: OptimConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    cluster: ClusterConfig = MISSING
    resources: ResourcesConfig = MISSING
    seed: int = ranged(0, ge=0, lt=2**32)
    experiment: str = "default"


# The schema of each config group but `method`, whose schema is its method's (meal.methods.registry).
GROUP_SCHEMAS: dict[str, type] = {
    "data": DataConfig,
    "student": ModelConfig,
    "teachers": TeachersConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
    "cluster": ClusterConfig,
    "resources": ResourcesConfig,
}


def register_schemas(method_schemas: Mapping[str, type]) -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent).

    Group options extend them through their defaults list, e.g. ``conf/data/cifar10.yaml``
    starts with ``defaults: [/schema/data@_here_, _self_]``.
    """
    cs = ConfigStore.instance()
    cs.store(name="meal_schema", node=MealConfig)
    for group, node in GROUP_SCHEMAS.items():
        cs.store(group="schema", name=group, node=node)
    for name, node in method_schemas.items():
        cs.store(group="schema/method", name=name, node=node)


NO_DEFAULT = object()


def schema_default(dotted: str, method_schema: type | None = None) -> Any:
    """The schema's default for the config key `dotted` (e.g. ``trainer.objective``), as a plain value.

    ``method.*`` keys are looked up in `method_schema`. Returns :data:`NO_DEFAULT` when the schemas hold no
    such key or it has no default (a required value).
    """
    from omegaconf import OmegaConf

    root = OmegaConf.structured(MealConfig)
    if method_schema is not None:
        root.method = OmegaConf.structured(method_schema)
    for group, node in GROUP_SCHEMAS.items():
        root[group] = OmegaConf.structured(node)
    try:
        if OmegaConf.is_missing(root, dotted) or OmegaConf.select(root, dotted, default=NO_DEFAULT) is NO_DEFAULT:
            return NO_DEFAULT
        value = OmegaConf.select(root, dotted)
    except Exception:  # an interpolation that cannot resolve without the rest of a run's config
        return NO_DEFAULT
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return str(value) if isinstance(value, Choice) else value
