"""What checking a soft-label cache's block checksums adds to opening it.

    python -m meal.softlabels.open_bench [--samples 60000] [--slots 1] [--classes 10] [--dtype float16]

Builds a cache of the given shape (random targets, the same file format and chunked build as a real
cache: ``values`` of shape (samples, slots, 2, classes)) in a temporary folder, then opens it
`--repeats` times each way and prints one JSON object on stdout with the median seconds of

- ``load_s``: reading the tensors without any check (how caches were opened before checksums);
- ``verify_s``: checking every block's CRC-32 alone;
- ``open_s``: :meth:`CacheStore.open`, the checks and the read together (what a run does);

in memory (``mmap=false``, the in-memory datasets' case) and memory-mapped (``mmap=true``, image
folders), with the file size and the overhead ``open_s / load_s``. The file is in the page cache
(it was just written), as it is for the runs of a sweep that share one cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from meal.softlabels.integrity import bad_block
from meal.softlabels.spec import DTYPES, FORMAT, CacheSpec
from meal.softlabels.store import CacheStore

log = logging.getLogger("meal.softlabels.open_bench")


def build_cache(root: Path, samples: int, slots: int, classes: int, dtype: str) -> CacheStore:
    """A complete cache of random targets with the given shape under `root`."""
    inputs = {"format": FORMAT, "benchmark": [samples, slots, classes, dtype]}
    spec = CacheSpec("finite", samples, slots, classes, 1.0, dtype, None, inputs)
    store = CacheStore(root, spec)
    generator = torch.Generator().manual_seed(0)

    def compute(start: int, end: int) -> dict[str, torch.Tensor]:
        values = torch.rand(end - start, slots, 2, classes, generator=generator)
        return {"values": values.to(DTYPES[dtype])}

    with store.lock():
        store.build(compute)
    return store


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(store: CacheStore, repeats: int) -> dict[str, object]:
    """Open-time figures of a complete cache (see the module docstring)."""
    checksums = json.loads(store.marker_path.read_text())["checksums"]
    result: dict[str, object] = {
        "bytes": store.data_path.stat().st_size,
        "blocks": len(checksums["blocks"]),
        "block_bytes": checksums["block_bytes"],
        "repeats": repeats,
    }
    for mmap in (False, True):
        load = median_seconds(lambda m=mmap: store.load(m), repeats)
        verify = median_seconds(lambda: bad_block(store.data_path, checksums), repeats)
        opened = median_seconds(lambda m=mmap: store.open(m), repeats)
        name = "mmap" if mmap else "in_memory"
        result[name] = {
            "load_s": round(load, 4),
            "verify_s": round(verify, 4),
            "open_s": round(opened, 4),
            "open_vs_load": round(opened / load, 2),
        }
    result["verify_gb_per_s"] = round(int(result["bytes"]) / 1e9 / result["in_memory"]["verify_s"], 2)  # type: ignore[index]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Build a cache of the asked shape, time its opening with and without the checks, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m meal.softlabels.open_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000, help="rows (training samples)")
    parser.add_argument("--slots", type=int, default=1, help="augmentations per sample (50: pad_crop_flip, pad 2)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meal-open-bench-", dir=args.dir) as tmp:
        store = build_cache(Path(tmp), args.samples, args.slots, args.classes, args.dtype)
        result = {
            "samples": args.samples,
            "slots": args.slots,
            "classes": args.classes,
            "dtype": args.dtype,
            **measure(store, args.repeats),
            "threads": torch.get_num_threads(),
        }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main())
