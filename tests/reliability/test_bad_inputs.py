"""The catalogue of bad inputs: each one, run through launch.py, fails with one clear line and changes no file.

Every row is a :class:`Case`: extra command-line overrides, an optional `setup_fn` that builds the
files the case needs in its own folder (``$tmp`` in the overrides is that folder), and a regular
expression the message must match. The message is the one ``error: ...`` line the entry point prints
for a user error (mistakes Hydra finds while composing the config included), with exit status 2.
To add a case, add a row.

All selected cases are launched in parallel (PARALLEL at a time) the first time a test needs a result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pytest
import torch
from omegaconf import OmegaConf

from meal.methods import method_classes
from meal.models import build_model
from meal.rundir import RESOLVED_CONFIG, comparable_config
from tests.conftest import compose_config, meal_environ, run_launch

#: the `method=` options (conf/method/*.yaml) and the registered method names, as the errors list them
METHOD_OPTIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "method").glob("*.yaml"))
METHODS = sorted(method_classes())

# every case starts launch.py in a subprocess
pytestmark = pytest.mark.slow

# Cheap runs: a tiny synthetic data set (3x32x32, 10 classes), one epoch, no W&B, one thread.
BASE = [
    "data=synthetic",
    "data.train_size=64",
    "data.test_size=32",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "logger=none",
    "method=ce",
    "teachers=none",
    "trainer.epochs=1",
    "trainer.progress=off",
    "trainer.threads=1",
]
SHAPE = {"num_classes": 10, "in_channels": 3, "image_size": 32}
MEAL_V1 = ["method=meal_v1", "teachers=none"]
PARALLEL = min(4, max(2, os.cpu_count() or 2))
TIMEOUT_S = 300


@dataclass(frozen=True)
class Case:
    """One bad input: overrides added to BASE, files to build first, and the message expected."""

    id: str
    args: tuple[str, ...]
    setup_fn: Callable[[Path], None] | None
    expected_regex: str


def teacher(arch: str, path: str) -> str:
    """A `teachers.members` override with one member loaded from `path` (``$tmp`` is expanded)."""
    return f"teachers.members=[{{arch:{arch},checkpoint:{path}}}]"


# ----------------------------------------------------------------------------------- fixture files
def _save_state_dict(path: Path, arch: str, num_classes: int = 10) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = SHAPE | {"num_classes": num_classes}
    torch.save(build_model(arch, shape["num_classes"], shape["in_channels"], shape["image_size"]).state_dict(), path)
    return path.read_bytes()


def good_teacher(tmp: Path) -> None:
    _save_state_dict(tmp / "teacher.pt", "fmnist_cnn")


def truncated_teacher(tmp: Path) -> None:
    data = _save_state_dict(tmp / "teacher.pt", "fmnist_cnn")
    (tmp / "teacher.pt").write_bytes(data[: len(data) // 2])


def other_arch_teacher(tmp: Path) -> None:
    _save_state_dict(tmp / "mlp_weights.pt", "fmnist_mlp")


def five_class_teacher(tmp: Path) -> None:
    _save_state_dict(tmp / "five_classes.pt", "fmnist_cnn", num_classes=5)


def empty_image_folder(tmp: Path) -> None:
    for split in ("train", "val"):
        (tmp / "images" / split / "cat").mkdir(parents=True)


def garbage_image_folder(tmp: Path) -> None:
    for split in ("train", "val"):
        folder = tmp / "images" / split / "cat"
        folder.mkdir(parents=True)
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))


def run_with_other_config(tmp: Path) -> None:
    """A run directory as a first start with optim.lr=0.2 left it: config, Hydra's record, a checkpoint."""
    run = tmp / "run"
    cfg = compose_config([*BASE, "optim.lr=0.2"], run)
    run.mkdir()
    (run / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(comparable_config(cfg))))
    for folder in (".hydra", ".hydra/accepted"):
        (run / folder).mkdir()
        (run / folder / "overrides.yaml").write_text("- optim.lr=0.2\n")
        (run / folder / "config.yaml").write_text("optim:\n  lr: 0.2\n")
        (run / folder / "hydra.yaml").write_text("hydra:\n  mode: RUN\n")
    (run / "launch.log").write_text("[first start]\n")
    (run / "checkpoints").mkdir()
    torch.save({"format": "meal-checkpoint/1", "global_step": 3}, run / "checkpoints" / "last.pt")


def run_with_truncated_checkpoint(tmp: Path) -> None:
    """A run directory whose last.pt was cut short (no resolved config: the check passes, the load must not)."""
    last = tmp / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"format": "meal-checkpoint/1", "student": {"w": torch.zeros(1000)}}, last)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) * 2 // 3])


def cache_of_other_teachers(tmp: Path) -> None:
    """A soft-label cache built (by a real run) for another teacher, moved to ``$tmp/other_cache``."""
    _save_state_dict(tmp / "other_teacher.pt", "fmnist_cnn")
    _save_state_dict(tmp / "teacher.pt", "fmnist_cnn")
    built = run_launch(
        [
            *BASE,
            "method=kd",
            "method.soft_labels=cached",
            f"method.cache_dir={tmp}/caches",
            teacher("fmnist_cnn", f"{tmp}/other_teacher.pt"),
            f"hydra.run.dir={tmp}/build",
        ],
        meal_environ(tmp / "env") | {"OMP_NUM_THREADS": "1"},
        timeout=TIMEOUT_S,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (only,) = (tmp / "caches").iterdir()
    only.rename(tmp / "other_cache")


def a_file(tmp: Path) -> None:
    """A plain file where a folder is expected."""
    (tmp / "a_file").write_text("not a folder\n")


def experiment_with_a_bad_choice(tmp: Path) -> None:
    """An experiment file (a `paper=` option in its own search path) that sets a choice key to a bad value."""
    (tmp / "conf" / "paper").mkdir(parents=True)
    (tmp / "conf" / "paper" / "bad.yaml").write_text("# @package _global_\ntrainer:\n  progress: sometimes\n")


def _softlabels_missing() -> bool:
    return any(importlib.util.find_spec(name) is None for name in ("meal.softlabels", "meal.methods.kd"))


# Choice keys (typed as Enums in the schemas): a value outside the allowed ones is refused while Hydra composes
# the config, before the run directory exists. Each row also checks that nothing was written.
CHOICE_CASES: list[Case] = [
    Case(
        "unknown-optim-name",
        ("optim.name=lbfgs",),
        None,
        r"optim\.name: 'lbfgs' is not a valid choice \(choose one of: sgd, adamw\)",
    ),
    Case(
        "unknown-schedule-name",
        ("schedule.name=linear",),
        None,
        r"schedule\.name: 'linear' is not a valid choice \(choose one of: meal_step, multistep, cosine, constant\)",
    ),
    Case(
        "progress-unknown",
        ("trainer.progress=bogus",),
        None,
        r"trainer\.progress: 'bogus' is not a valid choice \(choose one of: auto, bar, log, off\)$",
    ),
    Case(
        "nonfinite-policy-unknown",
        ("trainer.nonfinite=ignore",),
        None,
        r"trainer\.nonfinite: 'ignore' is not a valid choice \(choose one of: stop, skip\)$",
    ),
    Case(
        "meal-v2-loss-unknown",
        ("method=meal_v2", "method.loss=mse"),
        None,
        r"method\.loss: 'mse' is not a valid choice \(choose one of: ce, kl\)$",
    ),
    Case(
        "cache-dtype-unknown",
        ("method=kd", "method.cache_dtype=float64"),
        None,
        r"method\.cache_dtype: 'float64' is not a valid choice \(choose one of: float16, bfloat16, float32\)$",
    ),
    Case(
        "similarity-unknown",
        (*MEAL_V1, "method.similarity=cosine"),
        None,
        r"method\.similarity: 'cosine' is not a valid choice \(choose one of: ce, l1, l2, l1_soft, l2_soft, kl\)$",
    ),
    Case(
        "logger-mode-unknown",
        ("logger.mode=sometimes",),
        None,
        r"logger\.mode: 'sometimes' is not a valid choice \(choose one of: auto, online, offline, disabled\)$",
    ),
    Case(
        "precision-unknown",
        ("trainer.teacher_precision=fp64",),
        None,
        r"trainer\.teacher_precision: 'fp64' is not a valid choice \(choose one of: auto, fp32, bf16, fp16\)",
    ),
    Case(
        "adversarial-unknown",
        (*MEAL_V1, "method.adversarial=bogus"),
        None,
        r"error: method\.adversarial: 'bogus' is not a valid choice \(choose one of: grl, joint, alternating, "
        r"none\)$",
    ),
    Case(
        "d-schedule-unknown",
        ("method=meal_v2", "method.d_schedule=cosine"),
        None,
        r"error: method\.d_schedule: 'cosine' is not a valid choice \(choose one of: student, constant\)$",
    ),
    Case(
        "teacher-selection-unknown",
        (*MEAL_V1, "method.teacher_selection=best"),
        None,
        r"error: method\.teacher_selection: 'best' is not a valid choice \(choose one of: random, mean\)$",
    ),
    Case(
        "objective-unknown",
        ("trainer.objective=best",),
        None,
        r"error: trainer\.objective: 'best' is not a valid choice \(choose one of: auto, val, test\)$",
    ),
    Case(
        "teacher-training-optim-unknown",
        ("teachers.training.optim=adam",),
        None,
        r"error: teachers\.training\.optim: 'adam' is not a valid choice \(choose one of: sgd, adamw\)$",
    ),
    Case(
        "augment-unknown",
        ("data.augment=mixup",),
        None,
        r"error: data\.augment: 'mixup' is not a valid choice \(choose one of: none, flip, pad_crop, pad_crop_flip, "
        r"random_resized_crop_flip\)$",
    ),
    Case(
        "logger-name-unknown",
        ("logger.name=tensorboard",),
        None,
        r"error: logger\.name: 'tensorboard' is not a valid choice \(choose one of: wandb, none\)$",
    ),
    Case(
        "choice-in-a-config-file",
        ("hydra.searchpath=[file://$tmp/conf]", "paper=bad"),
        experiment_with_a_bad_choice,
        r"error: trainer\.progress: 'sometimes' is not a valid choice \(choose one of: auto, bar, log, off\) \(set "
        r"in config 'paper/bad'\)$",
    ),
]


# ----------------------------------------------------------------------------------- the catalogue
CASES: list[Case | object] = [
    *CHOICE_CASES,
    # names that do not exist
    Case(
        "unknown-arch",
        ("student.arch=resnet1000",),
        None,
        r"student\.arch: unknown architecture 'resnet1000' \(choose one of: .*fmnist_cnn.*torchvision\.<name>\)",
    ),
    Case(
        "unknown-student-option",
        ("student=resnet1000",),
        None,
        r"error: student: no option 'resnet1000'; did you mean 'resnet18'\? \(choose one of: densenet121, "
        r".*fmnist_cnn",
    ),
    Case(
        "unknown-dataset",
        ("data=mnist",),
        None,
        r"error: data: no option 'mnist'(; did you mean '\w+'\?)? \(choose one of: cifar10, .*synthetic\)$",
    ),
    Case(
        "unknown-dataset-name",
        ("data.name=mnist",),
        None,
        r"data\.name: unknown dataset 'mnist' \(choose one of: fashion_mnist, .*synthetic\)",
    ),
    Case(
        "unknown-method",
        ("method=meal_v3",),
        None,
        r"error: method: no option 'meal_v3'; did you mean 'meal_v\d'\? \(choose one of: "
        + re.escape(", ".join(METHOD_OPTIONS))
        + r"\)$",
    ),
    Case(
        "unknown-method-name",
        ("method.name=meal_v3",),
        None,
        r"method\.name: unknown method 'meal_v3' \(choose one of: " + re.escape(", ".join(METHODS)) + r"\)",
    ),
    Case(
        "unknown-teacher-set",
        ("teachers=cifar_quintet",),
        None,
        r"error: teachers: no option 'cifar_quintet'.* \(choose one of: .*cifar_trio, .*none\)$",
    ),
    Case(
        "unknown-optim-option",
        ("optim=adam",),
        None,
        r"error: optim: no option 'adam'; did you mean 'adamw'\? \(choose one of: adamw, sgd",
    ),
    # experiment names: Hydra skips an optional default it cannot find; meal refuses it
    Case(
        "unknown-paper",
        ("paper=meal_v2_fmnst",),
        None,
        r"error: paper: no experiment 'meal_v2_fmnst' in \S+experiments/paper; did you mean 'meal_v2_fmnist'\? "
        r"\(choose one of: kd_fmnist, .*meal_v2_fmnist",
    ),
    Case(
        "unknown-ablation",
        ("ablation=fmnist_gama",),
        None,
        r"error: ablation: no experiment 'fmnist_gama' in \S+experiments/ablation; did you mean 'fmnist_gamma'\? "
        r"\(choose one of: .*fmnist_blocks/all, .*fmnist_gamma",
    ),
    Case(
        "unknown-ablation-subfolder",
        ("ablation=fmnist_blocks/everything",),
        None,
        r"error: ablation: no experiment 'fmnist_blocks/everything' in \S+experiments/ablation.* \(choose one of: ",
    ),
    Case(
        "unknown-zoo",
        ("zoo=fmnist_trios",),
        None,
        r"error: zoo: no experiment 'fmnist_trios' in \S+experiments/zoo; did you mean 'fmnist_trio'\? "
        r"\(choose one of: .*fmnist_trio",
    ),
    Case(
        "teacher-not-in-zoo",
        ("method=meal_v1", "teachers=fmnist_pair", "teachers.train_missing=false"),
        None,
        r"teachers\.members\[0\]: teacher \S+fmnist_cnn-s0\.pt is not in the zoo; train it with: python launch\.py "
        r"method=ce .*\(or set teachers\.train_missing=true\)",
    ),
    # keys and types the schemas refuse
    Case(
        "misspelt-key",
        ("trainer.epoch=3",),
        None,
        r"error: trainer\.epoch: no such key \(did you mean trainer\.epochs\?\)$",
    ),
    Case(
        "misspelt-method-key",
        ("method=meal_v1", "method.gama=[1.0]"),
        None,
        r"error: method\.gama: no such key \(did you mean method\.gamma\?\)$",
    ),
    Case(
        "misspelt-key-far-off",
        ("trainer.zzz=1",),
        None,
        r"error: trainer\.zzz: no such key \(the keys there are: .*epochs, .*threads",
    ),
    Case(
        "wrong-type",
        ("trainer.epochs=three",),
        None,
        r"error: trainer\.epochs: Value 'three' of type 'str' could not be converted to Integer \(give a whole "
        r"number, e\.g\. trainer\.epochs=3\)$",
    ),
    Case(
        "wrong-type-in-list",
        ("method=meal_v1", "method.gamma=[one]"),
        None,
        r"error: method\.gamma\[0\]: Value 'one' (of type 'str' )?could not be converted to Float \(give a number, "
        r"e\.g\. method\.gamma=\[0\.5\]\)$",
    ),
    Case(
        "wrong-type-bool",
        ("trainer.compile=maybe",),
        None,
        r"error: trainer\.compile: Value 'maybe' is not a valid bool .*\(give true or false, e\.g\. "
        r"trainer\.compile=true\)$",
    ),
    Case(
        "override-does-not-parse",
        ("trainer.epochs=[",),
        None,
        r"error: command line: cannot parse an override: .* \(write overrides as key=value",
    ),
    # MEAL v1 block settings
    Case(
        "gamma-length",
        (*MEAL_V1, "method.gamma=[1.0,0.5]"),
        None,
        r"method\.gamma: has 2 values but method\.out_layer has 1 \(give one value per selected block\)",
    ),
    Case(
        "eta-length",
        (*MEAL_V1, "method.eta=[1.0,1.0,1.0]"),
        None,
        r"method\.eta: has 3 values but method\.out_layer has 1 \(give one value per selected block\)",
    ),
    Case(
        "out-dims-length",
        (*MEAL_V1, "method.out_dims=[]"),
        None,
        r"method\.out_dims: has 0 values but method\.out_layer has 1 \(give one value per selected block\)",
    ),
    Case(
        "out-layer-length",
        (*MEAL_V1, "method.out_layer=[-2,-1]"),
        None,
        r"method\.out_dims: has 1 values but method\.out_layer has 2 \(give one value per selected block\)",
    ),
    Case(
        "out-layer-out-of-range",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/teacher.pt"), "method.out_layer=[7]"),
        good_teacher,
        r"method\.out_layer\[0\]: index 7 is out of range: fmnist_tiny has 5 block outputs .*\(use -5\.\.4\)",
    ),
    Case(
        "out-layer-same-block-twice",
        (
            *MEAL_V1,
            teacher("fmnist_cnn", "$tmp/teacher.pt"),
            "method.out_layer=[-1,4]",
            "method.out_dims=[10,10]",
            "method.gamma=[1,1]",
            "method.eta=[1,1]",
        ),
        good_teacher,
        r"method\.out_layer\[1\]: index 4 is block 4 of fmnist_tiny, already selected by method\.out_layer\[0\] "
        r"\(-1\): it would be distilled twice \(select each block once\)",
    ),
    Case(
        "out-layer-repeated",
        (*MEAL_V1, "method.out_layer=[2,2]", "method.out_dims=[8,8]", "method.gamma=[1,1]", "method.eta=[1,1]"),
        None,
        r"method\.out_layer: repeats a block: \[2, 2\]",
    ),
    # declared ranges: each numeric key's range is checked before anything runs
    Case("lr-zero", ("optim.lr=0",), None, r"optim\.lr: must be > 0, got 0\.0 \(set optim\.lr to a value > 0\)"),
    Case("lr-negative", ("optim.lr=-0.1",), None, r"optim\.lr: must be > 0, got -0\.1 \(set optim\.lr to a value > 0"),
    Case(
        "lr-nan",
        ("optim.lr=nan",),
        None,
        r"optim\.lr: must be a finite number > 0, got nan \(set optim\.lr to a value > 0\)$",
    ),
    Case("lr-inf", ("optim.lr=inf",), None, r"optim\.lr: must be a finite number > 0, got inf"),
    Case(
        "epochs-zero",
        ("trainer.epochs=0",),
        None,
        r"trainer\.epochs: must be >= 1, got 0 \(set trainer\.epochs to a value >= 1 or null\)$",
    ),
    Case("max-steps-negative", ("trainer.max_steps=-5",), None, r"trainer\.max_steps: must be >= 1, got -5"),
    Case(
        "batch-size-zero",
        ("data.batch_size=0",),
        None,
        r"data\.batch_size: must be >= 1, got 0 \(set data\.batch_size to a value >= 1\)$",
    ),
    Case(
        "gamma-negative",
        (*MEAL_V1, "method.gamma=[-1.0]"),
        None,
        r"method\.gamma\[0\]: must be >= 0, got -1\.0 \(set method\.gamma\[0\] to a value >= 0\)$",
    ),
    Case("eta-negative", (*MEAL_V1, "method.eta=[-0.5]"), None, r"method\.eta\[0\]: must be >= 0, got -0\.5"),
    Case("meal-v2-eta-negative", ("method=meal_v2", "method.eta=-1"), None, r"method\.eta: must be >= 0, got -1\.0"),
    Case("out-dims-zero", (*MEAL_V1, "method.out_dims=[0]"), None, r"method\.out_dims\[0\]: must be >= 1, got 0"),
    Case(
        "grad-clip-negative",
        ("trainer.grad_clip=-1",),
        None,
        r"trainer\.grad_clip: must be > 0, got -1\.0 \(set trainer\.grad_clip to a value > 0 or null\)$",
    ),
    Case("min-lr-negative", ("schedule.min_lr=-1",), None, r"schedule\.min_lr: must be >= 0, got -1\.0"),
    Case("warmup-negative", ("schedule.warmup_epochs=-1",), None, r"schedule\.warmup_epochs: must be >= 0, got -1\.0"),
    Case(
        "milestone-negative",
        ("schedule=multistep", "schedule.milestones=[-1]"),
        None,
        r"schedule\.milestones\[0\]: must be >= 0, got -1\.0",
    ),
    Case(
        "schedule-factor-gives-no-epoch",
        ("schedule=meal_step", "trainer.epochs=null", "schedule.factor=0.001"),
        None,
        r"schedule\.factor: gives a run of 350 x 0\.001 = 0 epochs \(use schedule\.factor >= 0\.002, or set "
        r"trainer\.epochs=N\)",
    ),
    Case(
        "temperature-zero",
        ("method=kd", "method.temperature=0"),
        None,
        r"method\.temperature: must be > 0, got 0\.0 \(set method\.temperature to a value > 0\)$",
    ),
    Case(
        "kd-alpha-above-one", ("method=kd", "method.alpha=1.5"), None, r"method\.alpha: must be in \[0, 1\], got 1\.5"
    ),
    Case(
        "label-smoothing-above-one",
        ("method.label_smoothing=1.5",),
        None,
        r"method\.label_smoothing: must be in \[0, 1\], got 1\.5",
    ),
    Case(
        "betas-out-of-range",
        ("optim=adamw", "optim.betas=[2,0.999]"),
        None,
        r"optim\.betas\[0\]: must be in \[0, 1\), got 2\.0 \(set optim\.betas\[0\] to a value in \[0, 1\)\)$",
    ),
    Case(
        "betas-one-value",
        ("optim=adamw", "optim.betas=[0.9]"),
        None,
        r"optim\.betas: needs 2 values \(beta1, beta2\), got \[0\.9\] \(e\.g\. optim\.betas=\[0\.9,0\.999\]\)",
    ),
    Case("eps-zero", ("optim=adamw", "optim.eps=0"), None, r"optim\.eps: must be > 0, got 0\.0"),
    Case("momentum-one-or-more", ("optim.momentum=1.5",), None, r"optim\.momentum: must be in \[0, 1\), got 1\.5"),
    Case("weight-decay-negative", ("optim.weight_decay=-1",), None, r"optim\.weight_decay: must be >= 0, got -1\.0"),
    Case(
        "nesterov-without-momentum",
        ("optim.nesterov=true", "optim.momentum=0"),
        None,
        r"optim\.nesterov: Nesterov momentum needs a momentum, but optim\.momentum is 0 \(set optim\.momentum > 0 "
        r"or optim\.nesterov=false\)",
    ),
    Case(
        "d-betas-out-of-range",
        ("method=meal_v2", "method.d_betas=[0.5,1.0]"),
        None,
        r"method\.d_betas\[1\]: must be in \[0, 1\), got 1\.0",
    ),
    Case("discriminator-count-zero", ("method=meal_v2", "method.K=0"), None, r"method\.K: must be >= 1, got 0"),
    Case(
        "cutmix-above-one",
        ("method=meal_v2", "method.cutmix=1.5"),
        None,
        r"method\.cutmix: must be in \[0, 1\], got 1\.5",
    ),
    Case(
        "cache-topk-zero",
        ("method=kd", "method.cache_topk=0"),
        None,
        r"method\.cache_topk: must be >= 1, got 0 \(set method\.cache_topk to a value >= 1 or null\)$",
    ),
    Case(
        "teacher-training-lr-zero", ("teachers.training.lr=0",), None, r"teachers\.training\.lr: must be > 0, got 0\.0"
    ),
    Case(
        "teacher-seed-negative",
        ("teachers=fmnist_pair", "teachers.members.0.seed=-1"),
        None,
        r"teachers\.members\[0\]\.seed: must be in \[0, 4294967296\), got -1",
    ),
    Case("seed-negative", ("seed=-1",), None, r"error: seed: must be in \[0, 4294967296\), got -1"),
    Case(
        "val-split-one",
        ("data.val_split=1.0",),
        None,
        r"data\.val_split: must be in \[0, 1\), got 1\.0 \(set data\.val_split to a value in \[0, 1\)\)$",
    ),
    Case(
        "test-subset-zero",
        ("data.test_subset=0",),
        None,
        r"data\.test_subset: must be >= 1, got 0 \(set data\.test_subset to a value >= 1 or null\)$",
    ),
    Case("train-subset-zero", ("data.train_subset=0",), None, r"data\.train_subset: must be >= 1, got 0"),
    Case("pad-negative", ("data.pad=-1", "data.augment=pad_crop_flip"), None, r"data\.pad: must be >= 0, got -1"),
    Case("std-zero", ("data.std=[0,0,0]",), None, r"data\.std\[0\]: must be > 0, got 0\.0"),
    Case(
        "mean-nan",
        ("data.mean=[nan,0.5,0.5]",),
        None,
        r"data\.mean\[0\]: must be finite, got nan \(set data\.mean\[0\] to a finite value\)$",
    ),
    Case("num-classes-zero", ("data.num_classes=0",), None, r"data\.num_classes: must be >= 1, got 0"),
    Case("workers-negative", ("data.workers=-1",), None, r"data\.workers: must be >= 0, got -1"),
    Case(
        "threads-zero",
        ("trainer.threads=0",),
        None,
        r"trainer\.threads: must be >= 1, got 0 \(set trainer\.threads to a value >= 1 or null\)$",
    ),
    Case("threads-negative", ("trainer.threads=-2",), None, r"trainer\.threads: must be >= 1, got -2"),
    Case("eval-every-zero", ("trainer.eval_every=0",), None, r"trainer\.eval_every: must be >= 1, got 0"),
    Case("log-every-zero", ("trainer.log_every_steps=0",), None, r"trainer\.log_every_steps: must be >= 1, got 0"),
    Case("ckpt-every-zero", ("trainer.ckpt_every_steps=0",), None, r"trainer\.ckpt_every_steps: must be >= 1, got 0"),
    Case(
        "max-skipped-negative",
        ("trainer.max_skipped_steps=-1",),
        None,
        r"trainer\.max_skipped_steps: must be >= 0, got -1",
    ),
    Case("resources-nodes-zero", ("resources.nodes=0",), None, r"resources\.nodes: must be >= 1, got 0"),
    # devices
    Case(
        "device-unknown",
        ("trainer.device=tpu",),
        None,
        r"trainer\.device: 'tpu' is not a device \(use auto, cpu, cuda, cuda:N or mps\)$",
    ),
    pytest.param(
        Case(
            "device-mps-missing",
            ("trainer.device=mps",),
            None,
            r"trainer\.device: the Apple MPS device is not available on this machine \(use "
            r"trainer\.device=auto or cpu\)$",
        ),
        marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS"),
        id="device-mps-missing",
    ),
    Case(
        "device-gpu-missing",
        ("trainer.device=cuda:7",),
        None,
        r"trainer\.device: (CUDA was asked for but is not available|there is no GPU 7: this machine has \d)",
    ),
    # a run must do what it says: no training step, no validation or test image is an error, not a result
    Case(
        "val-split-leaves-no-training",
        ("data.val_split=0.999",),
        None,
        r"data\.val_split: leaves no training images \(64 of 64 are held out for validation\): the run would train "
        r"nothing \(use a smaller data\.val_split",
    ),
    Case(
        "val-split-rounds-to-none",
        ("data.val_split=0.001",),
        None,
        r"data\.val_split: 0\.001 of 64 training images rounds to no image: the run would validate on nothing "
        r"\(use a larger data\.val_split, or 0 for no validation set\)",
    ),
    # folders that cannot be written
    Case(
        "zoo-under-a-file",
        ("trainer.export_to_zoo=true", "paths.zoo=$tmp/a_file/zoo"),
        a_file,
        r"paths\.zoo: \S+a_file/zoo/synthetic cannot be created: \S+a_file is not a folder \(point paths\.zoo "
        r"\(or \$MEAL_ZOO\) at a folder this user can write\)",
    ),
    Case(
        "zoo-for-teacher-training-under-a-file",
        ("method=kd", "teachers=fmnist_pair", "paths.zoo=$tmp/a_file/zoo"),
        a_file,
        r"paths\.zoo: \S+a_file/zoo/synthetic/runs/fmnist_cnn-s0 cannot be created: \S+a_file is not a "
        r"folder",
    ),
    pytest.param(
        Case(
            "zoo-not-writable",
            ("trainer.export_to_zoo=true", "paths.zoo=/proc/meal_zoo"),
            None,
            r"paths\.zoo: /proc/meal_zoo/synthetic is not writable \(.*\) \(point paths\.zoo",
        ),
        marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc"),
        id="zoo-not-writable",
    ),
    # an augmentation the schema knows but this data set does not offer (checked against the data registry)
    Case(
        "augment-unavailable",
        ("data.augment=random_resized_crop_flip",),
        None,
        r"data\.augment: 'random_resized_crop_flip' is not available for synthetic \(choose one of: none, flip, "
        r"pad_crop, pad_crop_flip\)$",
    ),
    Case("mean-wrong-length", ("data.mean=[0.5]",), None, r"data\.mean: mean/std need 3 values \(one per channel\)"),
    # models and teachers that cannot be had
    Case(
        "meal-v1-without-teachers",
        ("method=meal_v1", "teachers=none"),
        None,
        r"teachers: method 'meal_v1' needs teachers but the set 'none' is empty \(choose a teacher set",
    ),
    Case(
        "student-tap-unknown",
        ("student.taps=[block9]",),
        None,
        r"student\.taps: no module named 'block9' in fmnist_tiny \(choose from: block1, ",
    ),
    Case(
        "student-pretrained-missing",
        ("student.pretrained=$tmp/no_such_weights.pt",),
        None,
        r"\S+no_such_weights\.pt: no such file \(check the path of the pretrained weights\)",
    ),
    Case(
        "student-pretrained-is-a-folder",
        ("student.pretrained=$tmp",),
        None,
        r"error: \S+: is a folder, not a weights file \(give the path of the \.pt/\.pth file in it\)$",
    ),
    Case(
        "pretrained-required",
        ("student.require_pretrained=true",),
        None,
        r"student\.pretrained: this configuration starts the student from trained weights .*add "
        r"student\.pretrained=/path/to/weights\.pth",
    ),
    # data that is not there or not readable
    Case(
        "dataset-dir-missing",
        ("data=cifar10", "data.root=$tmp/no_such_dir", "data.download=false"),
        None,
        r"data\.root: cifar10 not found or incomplete in \S+no_such_dir .*point data\.root at them, or set "
        r"data\.download=true",
    ),
    Case(
        "image-folder-missing",
        ("data=imagefolder", "data.root=$tmp/no_such_dir", "data.workers=0"),
        None,
        r"data\.root: image folder \S+no_such_dir/train does not exist \(expected ROOT/train/<class>/",
    ),
    Case(
        "image-folder-empty",
        ("data=imagefolder", "data.root=$tmp/images", "data.workers=0"),
        empty_image_folder,
        r"data\.root: \S+images/train holds no class folders with images",
    ),
    Case(
        "image-folder-unreadable",
        ("data=imagefolder", "data.root=$tmp/images", "data.workers=0", "data.image_size=32", "data.resize=36"),
        garbage_image_folder,
        r"data\.root: cannot read image \S+broken\.png .*remove or replace the file",
    ),
    Case(
        "image-folder-unreadable-in-worker",
        ("data=imagefolder", "data.root=$tmp/images", "data.workers=1", "data.image_size=32", "data.resize=36"),
        garbage_image_folder,
        r"error: data\.root: cannot read image \S+broken\.png .*remove or replace the file$",
    ),
    # teacher and student weights that do not fit
    Case(
        "teacher-missing",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/no_such_teacher.pt")),
        None,
        r"teachers\.members\[0\]\.checkpoint: teacher file \S+no_such_teacher\.pt not found \(fix the path",
    ),
    Case(
        "teacher-truncated",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/teacher.pt")),
        truncated_teacher,
        r"\S+teacher\.pt: cannot be read as a state dict .*the file may be truncated or corrupt",
    ),
    Case(
        "teacher-other-arch",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/mlp_weights.pt")),
        other_arch_teacher,
        r"\S+mlp_weights\.pt: does not fit fmnist_cnn with 10 classes: missing keys .*another architecture",
    ),
    Case(
        "teacher-other-classes",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/five_classes.pt")),
        five_class_teacher,
        r"\S+five_classes\.pt: does not fit fmnist_cnn with 10 classes: shape mismatch .*\(5, \d+\) in file vs "
        r"\(10, \d+\) in model.*class count",
    ),
    Case(
        "student-pretrained-misfit",
        ("student.pretrained=$tmp/mlp_weights.pt",),
        other_arch_teacher,
        r"\S+mlp_weights\.pt: does not fit fmnist_tiny with 10 classes: .*another architecture",
    ),
    # run directories that must not be touched
    Case(
        "resume-other-config",
        (),
        run_with_other_config,
        r"\S+/run: this run directory holds a run with a different config: optim\.lr \(was 0\.2, now 0\.1\); "
        r"restart it with its original overrides \(\S+overrides\.yaml\)",
    ),
    Case(
        "resume-truncated-checkpoint",
        (),
        run_with_truncated_checkpoint,
        r"\S+last\.pt: checkpoint is corrupt or truncated .*move it away to start from scratch",
    ),
    pytest.param(
        Case(
            "cache-of-other-teachers",
            (
                "method=kd",
                "method.soft_labels=cached",
                "method.cache_dir=$tmp/other_cache",
                teacher("fmnist_cnn", "$tmp/teacher.pt"),
            ),
            cache_of_other_teachers,
            r"method\.cache_dir: \S+other_cache is one soft-label cache \(built for teachers: other_teacher\), not "
            r"a folder of caches \(set method\.cache_dir to the folder that holds it",
        ),
        marks=pytest.mark.skipif(_softlabels_missing(), reason="cached soft labels (meal.softlabels) not available"),
        id="cache-of-other-teachers",
    ),
]


def _case_of(row: Case | object) -> Case:
    return row.values[0] if hasattr(row, "values") else row  # type: ignore[attr-defined]


def _ids() -> list[str]:
    return [_case_of(row).id for row in CASES]


# ----------------------------------------------------------------------------------- running cases
@dataclass
class Outcome:
    """What one case did: its process, the files before and after, and its folder."""

    proc: subprocess.CompletedProcess[str]
    before: dict[str, bytes]
    after: dict[str, bytes]
    folder: Path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _launch(case: Case, folder: Path, env: dict[str, str]) -> Outcome:
    before = _files(folder)
    args = [Template(a).safe_substitute(tmp=folder) for a in (*BASE, *case.args)]
    proc = run_launch([*args, f"hydra.run.dir={folder}/run"], env, timeout=TIMEOUT_S)
    return Outcome(proc, before, _files(folder), folder)


class Catalogue:
    """Starts every selected case on first use and hands out their outcomes."""

    def __init__(self, cases: Sequence[Case], root: Path) -> None:
        self.cases = {c.id: c for c in cases}
        self.root = root
        self.env = meal_environ(root / "env") | {"OMP_NUM_THREADS": "1"}
        self.futures: dict[str, Future[Outcome]] = {}
        self.lock = threading.Lock()
        self.started = False
        self.pool = ThreadPoolExecutor(PARALLEL)

    def _start(self) -> None:
        for case in self.cases.values():  # fixtures are built in this thread (torch, Hydra's global state)
            folder = self.root / case.id
            folder.mkdir()
            try:
                if case.setup_fn is not None:
                    case.setup_fn(folder)
            except Exception as exc:  # reported by the case's own test
                self.futures[case.id] = failed = Future()
                failed.set_exception(exc)
                continue
            self.futures[case.id] = self.pool.submit(_launch, case, folder, self.env)

    def outcome(self, case_id: str) -> Outcome:
        with self.lock:
            if not self.started:
                self.started = True
                self._start()
        return self.futures[case_id].result()


@pytest.fixture(scope="module")
def catalogue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """The outcomes of the cases selected in this session (a -k filter launches only those)."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and "case" in item.callspec.params
        and not any(mark.args and mark.args[0] for mark in item.iter_markers("skipif"))
    }
    cat = Catalogue([c for c in map(_case_of, CASES) if c.id in selected], tmp_path_factory.mktemp("catalogue"))
    yield cat
    cat.pool.shutdown(wait=True, cancel_futures=True)


def message_of(proc: subprocess.CompletedProcess[str]) -> str:
    """The user-facing message: the single `error:` line."""
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if re.search(r"\berror: ", line)]
    assert len(errors) == 1, f"expected one error line, got {errors}:\n{output[-3000:]}"
    return errors[0]


def _digest(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest()[:12] for name, data in files.items()}


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_bad_input(case: Case, catalogue: Catalogue) -> None:
    out = catalogue.outcome(case.id)
    output = out.proc.stdout + out.proc.stderr
    assert out.proc.returncode == 2, f"exit status {out.proc.returncode}, not 2:\n{output[-3000:]}"
    assert "Traceback" not in output, f"a traceback was printed:\n{output[-3000:]}"
    assert "run/result.json" not in out.after, "a refused run wrote a result"
    message = message_of(out.proc)
    print(message)
    assert re.search(case.expected_regex, message), f"message does not match {case.expected_regex!r}:\n{message}"
    for name, data in out.before.items():
        after = out.after.get(name)
        assert after is not None, f"{name} was deleted"
        if name.endswith(".log"):  # Hydra's job log is appended to, never rewritten
            assert after.startswith(data), f"{name} was rewritten"
        else:
            assert after == data, f"{name} changed: {_digest({name: data})} -> {_digest({name: after})}"


@pytest.mark.parametrize("case", CHOICE_CASES, ids=[c.id for c in CHOICE_CASES])
def test_a_bad_choice_is_refused_before_anything_is_written(case: Case, catalogue: Catalogue) -> None:
    """Hydra refuses the value while composing: no run directory, not even Hydra's record or log."""
    out = catalogue.outcome(case.id)
    assert out.proc.returncode == 2
    assert not (out.folder / "run").exists(), f"the refused start wrote {sorted(set(out.after) - set(out.before))}"
    assert out.after == out.before


# ----------------------------------------------------------------------------------- files and folders not trusted
# Inputs whose bytes or layout must be checked before a run uses them: image folders whose splits disagree,
# an explicit data.root that does not hold the data, teacher files that no longer match their sidecars, a run
# directory another run holds, and a first start refused for a mistyped path. Besides the message and the exit
# status, each row checks that the refused start wrote nothing but Hydra's own record and the directory's lock.
@dataclass(frozen=True)
class FileCase:
    """A file or folder input: overrides added to BASE, files to build first, the exit status, the key or file
    the one error line must name (``$tmp`` expanded), and a regular expression the line must match."""

    id: str
    args: tuple[str, ...]
    setup_fn: Callable[[Path], None] | None
    status: int
    named: str
    expected_regex: str


SPLIT_FOLDER = ("data=imagefolder", "data.root=$tmp/images", "data.workers=0", "data.image_size=32", "data.resize=36")
ZOO_KD = ("method=kd", "teachers=fmnist_single", "teachers.train_missing=false", "paths.zoo=$tmp/zoo")
ZOO_FILE = "$tmp/zoo/synthetic/fmnist_cnn-s0.pt"
# Files a refused start may leave in its run directory: Hydra's record of it, Hydra's log, the lock file.
REFUSED_START_FILES = re.compile(r"run/(\.hydra/[^/]+\.yaml|launch\.log|\.lock)")
HOLDERS: list[subprocess.Popen[str]] = []


def _image_split(folder: Path, classes: Sequence[str]) -> None:
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 36), (40 * c, 20 * i, 90)).save(folder / name / f"{i}.png")


def val_lacks_a_class(tmp: Path) -> None:
    _image_split(tmp / "images" / "train", ["cat", "dog", "fox"])
    _image_split(tmp / "images" / "val", ["cat", "fox"])


def val_has_an_unknown_class(tmp: Path) -> None:
    _image_split(tmp / "images" / "train", ["cat", "dog"])
    _image_split(tmp / "images" / "val", ["bird", "cat", "dog"])


def empty_fashion_root(tmp: Path) -> None:
    (tmp / "fashion").mkdir()


def _zoo_teacher(tmp: Path, sidecar: str | None = "", flip: bool = False) -> None:
    """A zoo entry for `teachers=fmnist_single` on the synthetic data, exported with a sidecar ("": a good one)."""
    path = tmp / "zoo" / "synthetic" / "fmnist_cnn-s0.pt"
    data = _save_state_dict(path, "fmnist_cnn")
    good = {
        "arch": "fmnist_cnn",
        "dataset": "synthetic",
        "classes": 10,
        "in_channels": 3,
        "seed": 0,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": path.name,
    }
    if sidecar is not None:
        path.with_suffix(".json").write_text(sidecar or json.dumps(good))
    if flip:  # damaged after export, same size
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])


def zoo_teacher_changed(tmp: Path) -> None:
    _zoo_teacher(tmp, flip=True)


def zoo_teacher_without_sidecar(tmp: Path) -> None:
    _zoo_teacher(tmp, sidecar=None)


def zoo_teacher_with_garbled_sidecar(tmp: Path) -> None:
    _zoo_teacher(tmp, sidecar='{"arch": "fmnist_cnn", "sha256": ')


def zoo_teacher_sidecar_without_sha(tmp: Path) -> None:
    _zoo_teacher(tmp, sidecar='{"arch": "fmnist_cnn", "classes": 10}')


def explicit_teacher_not_matching_its_sidecar(tmp: Path) -> None:
    _save_state_dict(tmp / "teacher.pt", "fmnist_cnn")
    (tmp / "teacher.json").write_text(json.dumps({"arch": "fmnist_cnn", "sha256": "0" * 64}))


def run_dir_held_by_another_start(tmp: Path) -> None:
    """A run directory with an accepted first start's record, locked by a process that is still running."""
    from tests.test_runlock import hold_in_subprocess

    run_with_other_config(tmp)
    HOLDERS.append(hold_in_subprocess(tmp / "run"))


FILE_CASES: list[FileCase] = [
    FileCase(
        "imagefolder-val-lacks-a-class",
        SPLIT_FOLDER,
        val_lacks_a_class,
        2,
        "$tmp/images/val",
        r"data\.root: \S+/images/val lacks 1 class folder\(s\) of \S+/images/train: dog; its labels would not "
        r"match the training split's \(give \S+/images/val exactly the class folders of \S+/images/train\)",
    ),
    FileCase(
        "imagefolder-val-has-an-unknown-class",
        SPLIT_FOLDER,
        val_has_an_unknown_class,
        2,
        "$tmp/images/val",
        r"data\.root: \S+/images/val has 1 class folder\(s\) that \S+/images/train lacks: bird;",
    ),
    FileCase(
        "fashion-root-mistyped",
        ("data=fashion_mnist", "data.root=$tmp/fashoin"),
        None,
        2,
        "$tmp/fashoin",
        r"data\.root: Fashion-MNIST not found in \S+/fashoin \(an explicit data\.root is the only place looked "
        r"at; .*or set data\.download=true\)",
    ),
    FileCase(
        "fashion-root-empty",
        ("data=fashion_mnist", "data.root=$tmp/fashion"),
        empty_fashion_root,
        2,
        "$tmp/fashion",
        r"data\.root: Fashion-MNIST not found in \S+/fashion \(an explicit data\.root",
    ),
    FileCase(
        "zoo-teacher-changed-after-export",
        ZOO_KD,
        zoo_teacher_changed,
        2,
        ZOO_FILE,
        r"teachers\.members\[0\]: teacher \S+/fmnist_cnn-s0\.pt does not match the sha256 in its sidecar "
        r"fmnist_cnn-s0\.json \(file [0-9a-f]{12}\.\.\., sidecar [0-9a-f]{12}\.\.\.\): it changed after it was "
        r"written \(delete \S+/fmnist_cnn-s0\.pt and fmnist_cnn-s0\.json, then train it again with "
        r"teachers\.train_missing=true\)",
    ),
    FileCase(
        "zoo-teacher-without-sidecar",
        ZOO_KD,
        zoo_teacher_without_sidecar,
        2,
        ZOO_FILE,
        r"teachers\.members\[0\]: zoo teacher \S+/fmnist_cnn-s0\.pt has no sidecar fmnist_cnn-s0\.json to check "
        r"it against \(delete .*; or name the file in teachers\.members\[0\]\.checkpoint to use it unchecked\)",
    ),
    FileCase(
        "zoo-teacher-garbled-sidecar",
        ZOO_KD,
        zoo_teacher_with_garbled_sidecar,
        2,
        ZOO_FILE,
        r"teachers\.members\[0\]: the sidecar \S+/fmnist_cnn-s0\.json of teacher \S+/fmnist_cnn-s0\.pt cannot be "
        r"read \(Expecting value.*\) \(delete \S+/fmnist_cnn-s0\.pt and fmnist_cnn-s0\.json, then train it",
    ),
    FileCase(
        "zoo-teacher-sidecar-without-sha256",
        ZOO_KD,
        zoo_teacher_sidecar_without_sha,
        2,
        ZOO_FILE,
        r"teachers\.members\[0\]: the sidecar \S+/fmnist_cnn-s0\.json of teacher \S+ records no sha256",
    ),
    FileCase(
        "explicit-teacher-not-matching-its-sidecar",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/teacher.pt")),
        explicit_teacher_not_matching_its_sidecar,
        2,
        "$tmp/teacher.pt",
        r"teachers\.members\[0\]: teacher \S+/teacher\.pt does not match the sha256 in its sidecar teacher\.json "
        r".*\(restore the file, or delete \S+/teacher\.json if the file was replaced on purpose\)",
    ),
    FileCase(
        "mistyped-teacher-first-start-writes-no-config",
        (*MEAL_V1, teacher("fmnist_cnn", "$tmp/teachr.pt")),
        good_teacher,
        2,
        "teachers.members[0].checkpoint",
        r"teachers\.members\[0\]\.checkpoint: teacher file \S+/teachr\.pt not found \(fix the path",
    ),
    FileCase(
        "run-dir-held-by-another-start",
        (),
        run_dir_held_by_another_start,
        2,
        "$tmp/run",
        r"\S+/run: another run is using this directory \(pid \d+ on host \S+, started [0-9T:-]+\); wait for it "
        r"to end or stop it, or start this run in a new directory \(hydra\.run\.dir=\.\.\.\)",
    ),
]


def _file_case_ids() -> list[str]:
    return [c.id for c in FILE_CASES]


@pytest.fixture(scope="module")
def file_catalogue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """The outcomes of the FILE_CASES rows selected in this session; processes holding run directories end after."""
    selected = {
        item.callspec.params["file_case"].id
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "file_case" in item.callspec.params
    }
    cat = Catalogue([c for c in FILE_CASES if c.id in selected], tmp_path_factory.mktemp("file_catalogue"))
    yield cat
    cat.pool.shutdown(wait=True, cancel_futures=True)
    for holder in HOLDERS:
        holder.kill()
        holder.wait(timeout=30)


@pytest.mark.parametrize("file_case", FILE_CASES, ids=_file_case_ids())
def test_untrusted_file_or_folder(file_case: FileCase, file_catalogue: Catalogue) -> None:
    out = file_catalogue.outcome(file_case.id)
    output = out.proc.stdout + out.proc.stderr
    assert out.proc.returncode == file_case.status, f"exit status {out.proc.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, f"a traceback was printed:\n{output[-3000:]}"
    message = message_of(out.proc)
    assert Template(file_case.named).safe_substitute(tmp=out.folder) in message, f"{file_case.named} not named"
    assert re.search(file_case.expected_regex, message), f"does not match {file_case.expected_regex!r}:\n{message}"
    for name, data in out.before.items():
        after = out.after.get(name)
        assert after is not None, f"{name} was deleted"
        if name.endswith(".log"):
            assert after.startswith(data), f"{name} was rewritten"
        else:
            assert after == data, f"{name} changed: {_digest({name: data})} -> {_digest({name: after})}"
    written = sorted(set(out.after) - set(out.before))
    assert all(REFUSED_START_FILES.fullmatch(name) for name in written), f"the refused start wrote {written}"
