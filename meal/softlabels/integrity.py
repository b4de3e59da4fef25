"""Per-block checksums of a soft-label cache's tensor file, written at build time and checked at every open.

The tensor file is cut into blocks of ``block_bytes`` bytes; each block's CRC-32 (``zlib.crc32``, about
2 GB/s on one core) is recorded in the cache's ``COMPLETE`` marker with the whole file's SHA-256. Opening a
cache re-reads the file and compares every block's CRC-32, so damaged bytes (a flipped bit, a block of
zeros from a broken copy, same size or not) are found before a single entry is trained on; the
SHA-256 is for the slower, deeper ``--verify`` check.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ALGORITHM = "crc32"
BLOCK_BYTES = 4 << 20


@dataclass
class FileDigests:
    """The checksums of one file: CRC-32 per block and SHA-256 of the whole."""

    block_bytes: int
    blocks: list[int]
    sha256: str

    def to_json(self) -> dict[str, object]:
        """The marker's ``checksums`` entry."""
        return {"algorithm": ALGORITHM, "block_bytes": self.block_bytes, "blocks": self.blocks}


def _blocks(path: Path, block_bytes: int) -> Iterator[memoryview]:
    """Yield the file's blocks as memoryviews of one reused buffer."""
    buffer = bytearray(block_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                return
            yield view[:n]


def file_digests(path: Path, block_bytes: int = BLOCK_BYTES) -> FileDigests:
    """CRC-32 of every block and SHA-256 of `path`, in one pass over it."""
    sha = hashlib.sha256()
    blocks = []
    for block in _blocks(path, block_bytes):
        blocks.append(zlib.crc32(block))
        sha.update(block)
    return FileDigests(block_bytes, blocks, sha.hexdigest())


def bad_block(path: Path, checksums: dict[str, object]) -> str | None:
    """None when every block of `path` matches the marker's `checksums`; else which block does not."""
    if checksums.get("algorithm") != ALGORITHM:
        return f"unknown checksum algorithm {checksums.get('algorithm')!r}"
    block_bytes = int(checksums["block_bytes"])  # type: ignore[arg-type]
    expected = list(checksums["blocks"])  # type: ignore[call-overload]
    count = 0
    for i, block in enumerate(_blocks(path, block_bytes)):
        if i >= len(expected) or zlib.crc32(block) != expected[i]:
            return (
                f"block {i} of {len(expected)} (bytes {i * block_bytes}..{i * block_bytes + len(block) - 1}) "
                f"does not match its {ALGORITHM} checksum"
            )
        count += 1
    if count != len(expected):
        return f"the file holds {count} of its {len(expected)} checksummed blocks"
    return None


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    sha = hashlib.sha256()
    for block in _blocks(path, BLOCK_BYTES):
        sha.update(block)
    return sha.hexdigest()
