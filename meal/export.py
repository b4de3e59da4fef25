"""``python -m meal.export <run_dir | checkpoint | zoo entry> --out DIR``: ship a trained student.

Writes three files into DIR:

- ``student.pt``: the student's weights as a plain torchvision-format state dict (CPU tensors), loadable
  with ``model.load_state_dict(torch.load("student.pt"))`` into the architecture the sidecar names, and
  usable as a teacher (``teachers.members=[{arch: ..., checkpoint: .../student.pt}]``);
- ``student.onnx``: the same network in ONNX (input ``input``: float32 ``N x C x H x W``, any batch size;
  output ``logits``: ``N x classes``);
- ``student.json``: the zoo sidecar's keys (``arch``, ``dataset``, ``classes``, ``in_channels``,
  ``image_size``), the input normalisation (``normalize``, ``mean``, ``std``: images scaled to [0, 1],
  then ``(x - mean) / std`` per channel when ``normalize`` is true), the run's final figures
  (``metrics``), ``sha256`` of student.pt and ``onnx_sha256`` of student.onnx, where it came from
  (``source``) and the resolved ``config`` of the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from meal.entry import quiet_interrupt_at_start, run_entry_point

log = logging.getLogger("meal.export")

#: :class:`~meal.core.result.Result` fields copied into the sidecar's ``metrics`` (all of them for a run
#: directory's student, None where the run recorded no value; none for a zoo entry)
METRIC_FIELDS = (
    "top1",
    "top5",
    "val_top1",
    "val_top5",
    "best_top1",
    "best_val_top1",
    "best_metric",
    "ece",
    "nll",
    "ensemble_agreement",
    "teacher_agreement",
    "ensemble_top1",
    "teacher_top1",
    "epochs",
    "params",
)
ONNX_OPSET = 18


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m meal.export``."""
    parser = argparse.ArgumentParser(
        prog="python -m meal.export",
        description="Export a run's student as student.pt (torchvision-format state dict), student.onnx and "
        "a student.json sidecar.",
    )
    parser.add_argument("target", help="a run directory, a checkpoint file, or a zoo entry")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the three files into")
    parser.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        default="last",
        help="which checkpoint of a run directory (default: last, the final weights)",
    )
    return parser


def _data_facts(cfg: Any) -> dict[str, Any]:
    data = cfg.data
    return {
        "dataset": str(data.name),
        "classes": int(data.num_classes),
        "in_channels": int(data.in_channels),
        "image_size": int(data.image_size),
        "normalize": bool(data.get("normalize", True)),
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
    }


def export_onnx(model: torch.nn.Module, path: Path, in_channels: int, image_size: int) -> None:
    """Write `model` (eval mode, CPU) to `path` as ONNX with a dynamic batch dimension.

    Uses torch's torch.export-based exporter (it needs onnxscript: ``pip install -e '.[export]'``); the
    older TorchScript-based exporter, used only where onnxscript is missing, cannot export every
    architecture (e.g. adaptive pooling to a size that does not divide the input).
    """
    from meal.errors import MealError

    example = torch.zeros(2, in_channels, image_size, image_size)
    names = {"input_names": ["input"], "output_names": ["logits"], "opset_version": ONNX_OPSET}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if importlib.util.find_spec("onnxscript") is not None:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                model, (example,), dynamic_shapes=({0: batch},), dynamo=True, verbose=False, **names
            )
            program.save(str(tmp))
        else:
            legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    **names,
                    **legacy,
                )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MealError(f"{path}: torch cannot export this model to ONNX ({first}); student.pt is written") from exc
    os.replace(tmp, path)


def export_student(target: str, out_dir: Path, which: str = "last") -> dict[str, Any]:
    """Export the student named by `target` into `out_dir`; return the sidecar's content."""
    from omegaconf import OmegaConf

    from meal.engine.checkpoint import atomic_write_bytes, atomic_write_json, file_sha256
    from meal.errors import CheckpointError
    from meal.evaluation.target import resolve_target
    from meal.models import build_model

    found = resolve_target(target, which)
    facts = _data_facts(found.cfg)
    model = build_model(found.arch, facts["classes"], facts["in_channels"], facts["image_size"], taps=[])
    try:
        model.load_state_dict(found.state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{found.weights_file}: does not fit {found.arch} ({str(exc).splitlines()[0]})") from exc
    net = model.net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, onnx_file, sidecar = out_dir / "student.pt", out_dir / "student.onnx", out_dir / "student.json"
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, buffer)
    atomic_write_bytes(weights, buffer.getvalue())
    export_onnx(net, onnx_file, facts["in_channels"], facts["image_size"])
    metrics = {key: found.result.get(key) for key in METRIC_FIELDS} if found.result is not None else {}
    info = {
        "arch": found.arch,
        **facts,
        "metrics": metrics,
        "file": weights.name,
        "sha256": file_sha256(weights),
        "onnx": onnx_file.name,
        "onnx_sha256": file_sha256(onnx_file),
        "onnx_input": "float32 N x C x H x W, normalised as mean/std say; output: logits N x classes",
        "source": {
            "target": target,
            "kind": found.kind,
            "weights": str(found.weights_file),
            "run_dir": str(found.run_dir) if found.run_dir else None,
        },
        "config": OmegaConf.to_container(found.cfg, resolve=True, enum_to_str=True),
    }
    atomic_write_json(sidecar, info)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok; a user error ends in one ``error:`` line and status 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out_dir = Path(args.out)
    info = export_student(args.target, out_dir, args.checkpoint)
    top1 = info["metrics"].get("top1")
    shown = f", test top-1 {top1:.2f}" if isinstance(top1, (int, float)) else ""
    sys.stdout.write(
        f"exported {info['arch']} ({info['dataset']}, {info['classes']} classes, {info['in_channels']}x"
        f"{info['image_size']}x{info['image_size']} input{shown}) from {info['source']['weights']}\n"
    )
    for name in (info["file"], info["onnx"], "student.json"):
        path = out_dir / name
        sys.stdout.write(f"  {path}  {path.stat().st_size:,} bytes\n")
    sys.stdout.write(f"  sha256 {info['sha256']} (student.pt)\n")
    return 0


if __name__ == "__main__":
    quiet_interrupt_at_start()
    sys.exit(run_entry_point(main))
