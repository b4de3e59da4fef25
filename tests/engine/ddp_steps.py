"""Worker for tests/engine/test_ddp.py, started with ``python -m torch.distributed.run --nproc_per_node=2``.

Each rank trains a method for a few steps on its half of a fixed global batch, through the engine's
DistributedDataParallel replicas (and SyncBatchNorm when asked), and also trains a single-process reference
of the same method on the whole batch. It writes, per rank, how far its weights and buffers ended from the
reference's and a fingerprint of its weights, so the test can compare ranks with each other and with one
process. Usage: ``ddp_steps.py OUT_DIR CASE [CASE ...]`` with each CASE one of ``ce_sync_bn``,
``ce_plain_bn``, ``meal_v2_alternating``, ``meal_v1_hidden_block``; rank r writes ``OUT_DIR/<CASE>-rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as torch_dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for meal and tests.*

from meal.data import Batch
from meal.engine import distributed
from meal.methods import Method, build_method
from meal.models import build_model
from tests.softlabels.toy import CLASSES, SIZE, method_cfg, toy_teachers

STEPS = 3
GLOBAL_BATCH = 16

CASES = {
    "ce_sync_bn": ("ce", {}, True),
    "ce_plain_bn": ("ce", {}, False),
    "meal_v2_alternating": ("meal_v2", {"adversarial": "alternating", "d_lr": 0.05}, True),
    "meal_v1_hidden_block": (
        "meal_v1",
        {"out_layer": [1], "out_dims": [16], "gamma": [1.0], "eta": [0.5], "adversarial": "grl"},
        True,
    ),
}


def build(name: str, options: dict) -> Method:
    """The method around a fresh BatchNorm student (the same initial weights on every call)."""
    torch.manual_seed(0)
    student = build_model("fmnist_tiny", CLASSES, 1, SIZE)
    teachers = toy_teachers() if name != "ce" else []
    return build_method(method_cfg(name, **options), student, teachers, CLASSES, seed=0)


def global_batch(step: int) -> Batch:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 1, SIZE, SIZE, generator=g)
    y = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)
    return Batch(x, y, torch.arange(GLOBAL_BATCH))


def train(method: Method, part: slice) -> None:
    """`STEPS` SGD steps on `part` of each global batch, stepping the optimizers the engine would step."""
    student_opt = torch.optim.SGD(method.student_parameters(), lr=0.1, momentum=0.9)
    extras = [e.optimizer for e in method.extra_optimizers() if e.stepped_by_engine]
    method.train()
    for step in range(STEPS):
        for opt in [student_opt, *extras]:
            opt.zero_grad(set_to_none=True)
        batch = global_batch(step)
        local = Batch(batch.x[part], batch.y[part], batch.index[part])
        method.training_step(local, step).loss.backward()
        for opt in [student_opt, *extras]:
            opt.step()


def main() -> None:
    out_dir, cases = Path(sys.argv[1]), sys.argv[2:]
    info = distributed.setup()
    for case in cases:
        run_case(case, out_dir, info)
    torch_dist.barrier()
    distributed.teardown(info)


def run_case(case: str, out_dir: Path, info: distributed.DistInfo) -> None:
    """Train `case` as a replica and as a single-process reference; write this rank's comparison."""
    name, options, sync_bn = CASES[case]
    rank, world = info.rank, info.world_size

    reference = build(name, options)
    train(reference, slice(None))

    method = build(name, options)
    initial = {n: t.clone() for n, t in method.state_dict().items() if torch.is_tensor(t)}
    if sync_bn:
        distributed.sync_batchnorm(method.student, info)
    method.distribute(distributed.data_parallel_wrapper(info))
    guard = ""
    try:
        method.student(global_batch(0).x)
    except RuntimeError as exc:
        guard = str(exc)
    share = GLOBAL_BATCH // world
    train(method, slice(rank * share, (rank + 1) * share))

    ref_state, state = reference.state_dict(), method.state_dict()
    names = [n for n in ref_state if torch.is_floating_point(ref_state[n])]
    diffs = {n: (state[n] - ref_state[n]).abs().max().item() for n in names}
    running = [n for n in names if "running_" in n]
    report = {
        "rank": rank,
        "world_size": world,
        "guard": guard,
        "max_param_diff": max(d for n, d in diffs.items() if n not in running),
        "max_running_stat_diff": max((diffs[n] for n in running), default=0.0),
        "discriminator_diff": max((d for n, d in diffs.items() if n.startswith("discriminators.")), default=None),
        "discriminator_moved": max(
            ((state[n] - initial[n]).abs().max().item() for n in names if n.startswith("discriminators.")),
            default=None,
        ),
        "fingerprint": [float(state[n].double().sum()) for n in names],
        "sync_batchnorm_layers": sum("SyncBatchNorm" in type(m).__name__ for m in method.student.modules()),
    }
    (out_dir / f"{case}-rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
