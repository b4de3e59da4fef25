"""The on-disk cache: one directory per key, built in resumable chunks, marked complete last.

Layout of ``<cache_dir>/<key>/``::

    manifest.json     written first: key, keyed inputs, layout, chunk plan
    chunks/NNNNNN.pt  one file per chunk of rows, each written atomically (tmp + rename)
    soft_labels.pt    all chunks concatenated (torch.save of a dict of tensors), written atomically
    COMPLETE          JSON (key, size, SHA-256 and per-block CRC-32 checksums of soft_labels.pt), written last
    .lock             advisory lock held while building

A cache is used only when ``COMPLETE`` exists, names the same key, matches the size of
``soft_labels.pt`` and every block of that file matches its checksum (checked at every open, see
:mod:`meal.softlabels.integrity`); a damaged cache is rebuilt, never read. A build killed at any point
leaves no ``COMPLETE``; the next build takes over the chunks already written and computes the rest.
Concurrent jobs that need the same cache serialise on the lock: one builds, the others wait and then read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from meal.core.io import atomic_write, atomic_write_json
from meal.softlabels.integrity import bad_block, file_digests, sha256_of
from meal.softlabels.spec import CacheSpec

log = logging.getLogger(__name__)

ChunkFn = Callable[[int, int], dict[str, torch.Tensor]]


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save `obj` straight into an atomic write of `path` (no copy of it in memory)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def chunk_plan(num_samples: int, chunk_samples: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the chunks."""
    step = max(int(chunk_samples), 1)
    return [(s, min(s + step, num_samples)) for s in range(0, num_samples, step)]


def default_chunk_samples(spec: CacheSpec, entries_per_chunk: int = 1 << 16) -> int:
    """Rows per chunk: about `entries_per_chunk` (row, slot) entries, at least one row."""
    return max(1, entries_per_chunk // max(spec.slots, 1))


class CacheStore:
    """The directory of one cache key."""

    MANIFEST = "manifest.json"
    DATA = "soft_labels.pt"
    MARKER = "COMPLETE"

    def __init__(self, root: Path, spec: CacheSpec) -> None:
        self.root = Path(root).expanduser()
        self.spec = spec
        self.dir = self.root / spec.key
        self.chunks_dir = self.dir / "chunks"

    @property
    def data_path(self) -> Path:
        """The assembled tensor file."""
        return self.dir / self.DATA

    @property
    def marker_path(self) -> Path:
        """The completion marker, written last."""
        return self.dir / self.MARKER

    @property
    def manifest_path(self) -> Path:
        """The manifest, written first."""
        return self.dir / self.MANIFEST

    # ------------------------------------------------------------------ state
    def _marker(self) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.marker_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return marker if isinstance(marker, dict) else None

    def problem(self, checksums: bool = True, sha256: bool = False) -> str | None:
        """Why this key's cache cannot be used; None when it is complete and intact.

        Without `checksums` only the marker and the file size are looked at; with it every block of the
        tensor file is checked against its CRC-32 (a marker written before block checksums is checked
        against its SHA-256 instead); `sha256` re-hashes the whole file as well.
        """
        marker = self._marker()
        if marker is None or marker.get("key") != self.spec.key:
            return f"no {self.MARKER} marker for this key"
        try:
            size = self.data_path.stat().st_size
        except OSError:
            return f"{self.DATA} is missing"
        if size != marker.get("size"):
            return f"{self.DATA} holds {size} bytes, its marker says {marker.get('size')}"
        blocks = marker.get("checksums")
        if checksums and isinstance(blocks, dict):
            damage = bad_block(self.data_path, blocks)
            if damage is not None:
                return f"{self.DATA} is damaged: {damage}"
        if (sha256 or (checksums and not isinstance(blocks, dict))) and sha256_of(self.data_path) != marker.get(
            "sha256"
        ):
            return f"{self.DATA} does not match the SHA-256 its marker records"
        return None

    def is_complete(self, verify: bool = False) -> bool:
        """Whether a whole cache for this key is on disk (with `verify`: every checksum and the SHA-256 match)."""
        return self.problem(checksums=verify, sha256=verify) is None

    def status(self) -> str:
        """``complete``, ``partial`` (a build was started and not finished) or ``missing``."""
        if self.is_complete():
            return "complete"
        return "partial" if self.dir.exists() and any(self.dir.iterdir()) else "missing"

    def chunk_path(self, i: int) -> Path:
        """File of chunk `i`."""
        return self.chunks_dir / f"{i:06d}.pt"

    def done_chunks(self) -> list[int]:
        """Indices of the chunks already written."""
        if not self.chunks_dir.is_dir():
            return []
        return sorted(int(p.stem) for p in self.chunks_dir.glob("[0-9]*.pt"))

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the build lock of this key (blocks while another process builds it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("soft-label cache %s is being built by another process: waiting", self.dir)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ build
    def _manifest(self, chunk_samples: int) -> dict[str, Any]:
        spec = self.spec
        return {
            "format": spec.inputs["format"],
            "key": spec.key,
            "kind": spec.kind,
            "num_samples": spec.num_samples,
            "slots": spec.slots,
            "num_classes": spec.num_classes,
            "temperature": spec.temperature,
            "dtype": spec.dtype,
            "topk": spec.topk,
            "chunk_samples": chunk_samples,
            "inputs": spec.inputs,
            "info": spec.info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _start(self, chunk_samples: int) -> list[tuple[int, int]]:
        """Read (or write) the manifest and return the chunk plan it fixes."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("key") != self.spec.key:
            shutil.rmtree(self.chunks_dir, ignore_errors=True)
            self.marker_path.unlink(missing_ok=True)
            manifest = self._manifest(chunk_samples)
            atomic_write_json(self.manifest_path, manifest)
        return chunk_plan(self.spec.num_samples, int(manifest["chunk_samples"]))

    def _read_chunk(self, i: int, start: int, end: int) -> dict[str, torch.Tensor] | None:
        path = self.chunk_path(i)
        try:
            chunk = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # any unreadable chunk is computed again
            return None
        if not isinstance(chunk, dict) or chunk.get("range") != [start, end]:
            return None
        return chunk["tensors"]

    def build(self, compute: ChunkFn, chunk_samples: int | None = None) -> dict[str, int]:
        """Compute the missing chunks, assemble the tensor file and write the marker.

        Call under :meth:`lock`. Returns counts of chunks computed and reused.
        """
        self.marker_path.unlink(missing_ok=True)  # a cache being built, or built again, is not complete
        plan = self._start(chunk_samples or default_chunk_samples(self.spec))
        done = set(self.done_chunks())
        computed, reused = 0, len(done & set(range(len(plan))))
        if reused:
            log.info(
                "soft-label cache %s: resuming an interrupted build (%d of %d chunks on disk)",
                self.dir,
                reused,
                len(plan),
            )
        started = time.monotonic()
        for i, (start, end) in enumerate(plan):
            if i in done:
                continue
            atomic_torch_save(self.chunk_path(i), {"range": [start, end], "tensors": compute(start, end)})
            computed += 1
            if computed == 1 or i + 1 == len(plan) or computed % max(len(plan) // 10, 1) == 0:
                log.info("soft-label cache: chunk %d/%d (%.1fs)", i + 1, len(plan), time.monotonic() - started)
        redone = self._assemble(plan, compute)
        return {"computed": computed + redone, "reused": reused - redone}

    def _assemble(self, plan: list[tuple[int, int]], compute: ChunkFn) -> int:
        """Concatenate the chunks into the tensor file, then write the marker; returns chunks recomputed."""
        parts: list[dict[str, torch.Tensor]] = []
        redone = 0
        for i, (start, end) in enumerate(plan):
            chunk = self._read_chunk(i, start, end)
            if chunk is None:
                log.warning("soft-label cache: chunk %d is unreadable, computing it again", i)
                chunk = compute(start, end)
                redone += 1
            parts.append(chunk)
        tensors = {name: torch.cat([p[name] for p in parts], dim=0) for name in parts[0]}
        atomic_torch_save(self.data_path, tensors)
        digests = file_digests(self.data_path)
        atomic_write_json(
            self.marker_path,
            {
                "key": self.spec.key,
                "size": self.data_path.stat().st_size,
                "sha256": digests.sha256,
                "checksums": digests.to_json(),
                "shapes": {k: list(v.shape) for k, v in tensors.items()},
            },
        )
        shutil.rmtree(self.chunks_dir, ignore_errors=True)
        return redone

    def load(self, mmap: bool = True) -> dict[str, torch.Tensor]:
        """The cached tensors on the CPU, memory-mapped from the file or read into memory (unchecked)."""
        return torch.load(self.data_path, map_location="cpu", weights_only=True, mmap=mmap)

    def open(self, mmap: bool = True, report: bool = True) -> dict[str, torch.Tensor] | None:
        """The cached tensors when the cache is complete and every block matches its checksum, else None.

        With `report`, a cache that has a marker but cannot be used (damaged, cut short) is logged.
        """
        started = time.monotonic()
        problem = self.problem(checksums=True)
        if problem is not None:
            if report and self.marker_path.exists():
                log.warning("soft-label cache %s cannot be used (%s): building it again", self.dir, problem)
            return None
        checked = time.monotonic() - started
        tensors = self.load(mmap)
        log.info(
            "soft-label cache %s: checksums verified in %.2fs, opened in %.2fs",
            self.dir,
            checked,
            time.monotonic() - started,
        )
        return tensors
