"""Per-block checksums of a cache file: recorded in one pass, and a damaged block is found and named."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from meal.softlabels.integrity import bad_block, file_digests, sha256_of

BLOCK = 1000


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "soft_labels.pt"
    path.write_bytes(bytes(range(256)) * 14)  # 3584 bytes: three full blocks and a short one
    return path


def test_digests_are_the_crc32_of_each_block_and_the_sha256_of_the_file(payload: Path) -> None:
    data = payload.read_bytes()
    digests = file_digests(payload, BLOCK)
    assert digests.blocks == [zlib.crc32(data[i : i + BLOCK]) for i in (0, 1000, 2000, 3000)]
    assert digests.sha256 == hashlib.sha256(data).hexdigest() == sha256_of(payload)
    assert digests.to_json() == {"algorithm": "crc32", "block_bytes": BLOCK, "blocks": digests.blocks}
    assert bad_block(payload, digests.to_json()) is None


@pytest.mark.parametrize(
    ("offset", "block", "span"), [(0, 0, "0..999"), (2999, 2, "2000..2999"), (3583, 3, "3000..3583")]
)
def test_one_flipped_byte_is_found_in_its_block(payload: Path, offset: int, block: int, span: str) -> None:
    checksums = file_digests(payload, BLOCK).to_json()
    data = bytearray(payload.read_bytes())
    data[offset] ^= 0x01
    payload.write_bytes(bytes(data))
    assert bad_block(payload, checksums) == f"block {block} of 4 (bytes {span}) does not match its crc32 checksum"


def test_a_file_longer_or_shorter_than_its_checksums_is_found(payload: Path) -> None:
    checksums = file_digests(payload, BLOCK).to_json()
    data = payload.read_bytes()
    payload.write_bytes(data + bytes(1000))
    assert bad_block(payload, checksums) == "block 3 of 4 (bytes 3000..3999) does not match its crc32 checksum"
    payload.write_bytes(data[:2000])
    assert bad_block(payload, checksums) == "the file holds 2 of its 4 checksummed blocks"
    assert bad_block(payload, {**checksums, "algorithm": "md5"}) == "unknown checksum algorithm 'md5'"
