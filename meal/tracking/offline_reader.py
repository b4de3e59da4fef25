"""Reading back what a W&B run wrote to its local transaction log (``run-<id>.wandb``).

Every W&B run, offline or online, writes its records to ``<dir>/wandb/<offline-run|run>-<time>-<id>/
run-<id>.wandb``, the file ``wandb sync`` uploads. The file is a LevelDB-style log: a 7-byte header
(``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32
of type and data, little-endian length, type: full, first, middle or last). The chunks carry
serialized ``wandb.proto.wandb_internal_pb2.Record`` messages, parsed here with W&B's own protobuf
classes. A resumed run writes one such file per start; :func:`read_wandb_run` merges them.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meal.errors import MealError
from meal.tracking.run_id import read_run_id

logger = logging.getLogger(__name__)

_FILE_HEADER = struct.Struct("<4sHB")
_FILE_IDENT, _FILE_MAGIC, _FILE_VERSION = b":W&B", 0xBEE1, 0
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK_SIZE = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_INTERNAL_KEY = "_wandb"
# Fields of the run record returned by read_wandb_run, under these names.
_METADATA = {"project": "project", "run_group": "group", "display_name": "name", "job_type": "job_type"}


def iter_records(path: Path) -> Iterator[Any]:
    """Yield the ``Record`` messages of one ``.wandb`` file in the order they were written.

    A file whose writer was killed may end in a partial or corrupt chunk: reading stops there with a
    warning, and the records before it are kept.

    Raises:
        MealError: the file is not a W&B transaction log.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < _FILE_HEADER.size or _FILE_HEADER.unpack_from(data) != (
        _FILE_IDENT,
        _FILE_MAGIC,
        _FILE_VERSION,
    ):
        raise MealError(f"{path}: not a W&B transaction log (bad header)")
    position = _FILE_HEADER.size
    pieces: list[bytes] = []
    while True:
        room = _BLOCK_SIZE - position % _BLOCK_SIZE
        if room < _CHUNK_HEADER.size:
            position += room
            continue
        if position + _CHUNK_HEADER.size > len(data):
            break
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:
            break
        start = position + _CHUNK_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            logger.warning("%s: damaged record at byte %d; reading stops there", path, position)
            break
        position = start + length
        if kind == _FULL:
            pieces = [payload]
        elif kind == _FIRST:
            pieces = [payload]
            continue
        elif kind in (_MIDDLE, _LAST) and pieces:
            pieces.append(payload)
            if kind == _MIDDLE:
                continue
        else:
            logger.warning("%s: unexpected chunk type %d at byte %d; skipped", path, kind, position)
            pieces = []
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(b"".join(pieces))
        pieces = []
        yield record


@dataclass
class _Segment:
    """What one ``.wandb`` file (one start of the run) holds."""

    path: Path
    run_id: str | None = None
    start_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    summary_changes: list[tuple[list[str], Any, bool]] = field(default_factory=list)
    config_changes: list[tuple[list[str], Any, bool]] = field(default_factory=list)
    exit_code: int | None = None
    preempting: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def read_wandb_run(run_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Read a run's W&B records back from the ``.wandb`` files under ``<run_dir>/wandb``.

    Args:
        run_dir: the run directory (the one holding ``wandb/`` and ``wandb_id``).
        run_id: which W&B run to read; default: the id in ``<run_dir>/wandb_id``, else the run of
            the most recent file.

    Returns:
        ``history``: the logged rows in step order, each a dict of the logged keys plus W&B's
        ``_step``, ``_runtime`` and ``_timestamp``; a later start that logs a step not above the last
        step already kept is ignored, as W&B itself does with steps that go back.
        ``summary`` and ``config``: the final values, nested keys as nested dicts, without W&B's
        internal ``_wandb`` entry. ``run_id``. ``project``, ``group``, ``name``, ``job_type`` and
        ``tags``: as the last start gave them. ``exit_code``: of the last start, ``None`` if it did not
        finish. ``segments``: one dict per start (``path``, ``exit_code``, ``preempting``), oldest first.

    Raises:
        MealError: there is no ``.wandb`` file for the run under ``<run_dir>/wandb``.
    """
    wandb_dir = Path(run_dir) / "wandb"
    files = sorted(wandb_dir.glob("*run-*/run-*.wandb"))
    if not files:
        raise MealError(f"{wandb_dir}: holds no W&B run files (*run-*/run-*.wandb)")
    run_id = run_id or read_run_id(Path(run_dir))
    segments = [_read_segment(path) for path in files if run_id is None or path.stem == f"run-{run_id}"]
    if not segments:
        raise MealError(f"{wandb_dir}: holds no W&B files of run {run_id!r} (run-{run_id}.wandb)")
    segments.sort(key=lambda segment: segment.start_time)
    if run_id is None:
        run_id = segments[-1].run_id or segments[-1].path.stem.removeprefix("run-")
        segments = [segment for segment in segments if segment.path.stem == f"run-{run_id}"]

    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for segment in segments:
        last_step = history[-1].get("_step") if history else None
        for row in segment.history:
            step = row.get("_step")
            if last_step is not None and step is not None and step <= last_step:
                continue
            history.append(row)
            last_step = step
        _apply(summary, segment.summary_changes)
        _apply(config, segment.config_changes)
    summary.pop(_INTERNAL_KEY, None)
    config.pop(_INTERNAL_KEY, None)
    metadata = {key: None for key in _METADATA.values()} | {"tags": []}
    for segment in segments:
        metadata |= segment.metadata
    return {
        "history": history,
        "summary": summary,
        "config": config,
        "run_id": run_id,
        **metadata,
        "exit_code": segments[-1].exit_code,
        "segments": [{"path": str(s.path), "exit_code": s.exit_code, "preempting": s.preempting} for s in segments],
    }


def _read_segment(path: Path) -> _Segment:
    """Collect the run, history, summary, config, exit and preempting records of one file."""
    segment = _Segment(path=path)
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            segment.run_id = run.run_id or segment.run_id
            segment.metadata |= {key: getattr(run, field) for field, key in _METADATA.items() if getattr(run, field)}
            if run.tags:
                segment.metadata["tags"] = list(run.tags)
            if run.HasField("start_time"):
                segment.start_time = run.start_time.seconds + run.start_time.nanos / 1e9
            segment.config_changes += _changes(run.config.update, run.config.remove)
            segment.summary_changes += _changes(run.summary.update, run.summary.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                row[".".join(_key_path(item))] = _history_value(item)
            if "_step" not in row and record.history.HasField("step"):
                row["_step"] = record.history.step.num
            segment.history.append(row)
        elif kind == "summary":
            segment.summary_changes += _changes(record.summary.update, record.summary.remove)
        elif kind == "config":
            segment.config_changes += _changes(record.config.update, record.config.remove)
        elif kind == "exit":
            segment.exit_code = record.exit.exit_code
        elif kind == "preempting":
            segment.preempting = True
    if not segment.start_time:
        segment.start_time = path.stat().st_mtime
    return segment


def _key_path(item: Any) -> list[str]:
    """An item's key as a path: ``nested_key`` when set, else ``[key]``."""
    return list(item.nested_key) or [item.key]


def _changes(updates: Any, removes: Any) -> list[tuple[list[str], Any, bool]]:
    """Summary or config items as ``(key path, value, removed)`` in record order."""
    changes = [(_key_path(item), json.loads(item.value_json), False) for item in updates]
    changes += [(_key_path(item), None, True) for item in removes]
    return changes


def _apply(target: dict[str, Any], changes: list[tuple[list[str], Any, bool]]) -> None:
    """Apply updates and removals to a nested dict."""
    for path, value, removed in changes:
        node = target
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                if removed:
                    break
                child = node[key] = {}
            node = child
        else:
            if removed:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value


def _history_value(item: Any) -> Any:
    """The value of a history item, stored as JSON text or, in newer writers, as a typed field."""
    try:
        kind = item.WhichOneof("value")
    except ValueError:
        kind = None
    if kind is None:
        return json.loads(item.value_json) if item.value_json else None
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)
