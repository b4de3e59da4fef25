"""Where the published block-wise MEAL v1 step spends its time, side by side in one process.

    python experiments/bench/meal_v1_step_cost.py [--steps 5] [--threads N]

The published single-teacher CIFAR-10 setting (vgg19_bn -> vgg19_bn, out_layer [0,1,2,3,4], out_dims
[10000,5000,1000,500,10], one discriminator per block: 79M discriminator parameters), batch 32, fp32,
synthetic 32x32 inputs. Times a full step (forward, losses, backward, both optimizer steps) of

- the alignment in the published order (pool every channel, then average the channels) with the
  default per-parameter SGD loop,
- meal's alignment (average the channels, then pool: the same numbers) with the same SGD,
- meal's alignment with fused SGD kernels (what a run uses),

and plain CE training of the same student, taking turns every step; prints img/s from the median step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from omegaconf import OmegaConf

import meal.methods.meal_v1 as meal_v1
from meal.config.schema import MealV1MethodConfig
from meal.data.batch import Batch
from meal.methods import Teacher, build_method
from meal.methods.components import align, align_reference
from meal.models import build_model
from meal.teachers import freeze

VARIANTS = {  # name: (alignment function, fused optimizers)
    "published-order alignment, per-parameter SGD": (align_reference, False),
    "channel-mean-first alignment, per-parameter SGD": (align, False),
    "channel-mean-first alignment, fused SGD": (align, True),
}


def main() -> None:
    """Build the setting, time each variant and CE in turns, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = OmegaConf.structured(
        MealV1MethodConfig(
            out_layer=[0, 1, 2, 3, 4],
            out_dims=[10000, 5000, 1000, 500, 10],
            gamma=[0.001, 0.01, 0.05, 0.1, 1.0],
            eta=[1.0] * 5,
        )
    )
    student = build_model("vgg19_bn", 10, 3, 32)
    method = build_method(cfg, student, [Teacher("t", freeze(build_model("vgg19_bn", 10, 3, 32)))], 10, 0)
    batch = Batch(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)), torch.arange(32))

    def optimizers(fused: bool) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        extra = {"fused": True} if fused else {}
        return (
            torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **extra),
            torch.optim.SGD(method.discriminators.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, **extra),
        )

    built = {name: optimizers(fused) for name, (_, fused) in VARIANTS.items()}

    def meal_step(name: str) -> None:
        meal_v1.align = VARIANTS[name][0]
        student_opt, disc_opt = built[name]
        student_opt.zero_grad()
        disc_opt.zero_grad()
        method.training_step(batch, 0).loss.backward()
        student_opt.step()
        disc_opt.step()

    def ce_step() -> None:
        student_opt = built["channel-mean-first alignment, fused SGD"][0]
        student_opt.zero_grad()
        torch.nn.functional.cross_entropy(student(batch.x), batch.y).backward()
        student_opt.step()

    steps = {name: (lambda n=name: meal_step(n)) for name in VARIANTS} | {"ce": ce_step}
    for run in steps.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, run in steps.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    meal_v1.align = align
    ce_rate = batch.x.shape[0] / statistics.median(seconds["ce"])
    lines = [f"threads {torch.get_num_threads()}, median of {args.steps} steps", f"ce: {ce_rate:.1f} img/s"]
    for name in VARIANTS:
        rate = batch.x.shape[0] / statistics.median(seconds[name])
        lines.append(f"{name}: {rate:.1f} img/s, {rate / ce_rate:.3f}x ce")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
