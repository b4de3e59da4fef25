"""Atomic checkpoint writes and refusal of damaged checkpoints."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import meal.core.io as atomic_io
from meal.engine import checkpoint as ckpt
from meal.errors import CheckpointError


def test_round_trip(tmp_path: Path) -> None:
    state = {"w": torch.arange(10.0), "step": 7}
    ckpt.save_checkpoint(tmp_path / "last.pt", state)
    loaded = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert loaded["step"] == 7 and torch.equal(loaded["w"], state["w"])
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_refused(tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"w": torch.randn(256, 256)})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"step": 1})

    monkeypatch.setattr(atomic_io.os, "fdopen", lambda fd, mode: _FailingFile(fd))
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: cannot write the checkpoint \(No space left on device\); "
        r"the previous last\.pt is kept",
    ):
        ckpt.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "the partial temporary file is removed"


class _FailingFile:
    """A file object whose write fails half-way, like a full disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> int:
        os.write(self.fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_not_a_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a meal checkpoint"):
        ckpt.load_checkpoint(path)
