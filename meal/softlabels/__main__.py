"""Build (or finish, or check) the soft-label cache of a run ahead of a sweep.

    python -m meal.softlabels method=meal_v2 data.augment=pad_crop_flip [more hydra overrides]
    python -m meal.softlabels --verify method=kd

The overrides are those of the training runs that will use the cache (`launch.py`'s); teachers
missing from the zoo are trained first when the teacher set allows it. The cache directory and key
are logged. Exit status 0 when the cache is complete, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import open_dict

from meal.errors import ConfigError
from meal.softlabels.cli import build_pieces, compose_config, run_cli, setup_logging
from meal.softlabels.source import open_or_build
from meal.softlabels.store import CacheStore

log = logging.getLogger("meal.softlabels")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, compose the config, open or build its cache."""
    parser = argparse.ArgumentParser(prog="python -m meal.softlabels", description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="re-hash a complete cache's tensor file")
    parser.add_argument("--json", action="store_true", help="print the cache's path and key as JSON on stdout")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, as for launch.py")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meal-softlabels-") as tmp:
        cfg = compose_config(args.overrides, Path(tmp))
        from meal.methods.registry import method_classes  # the CLI asks the registry; no import cycle

        cached = [name for name, cls in method_classes().items() if cls.supports_cached_soft_labels]
        if cfg.method.name not in cached:
            raise ConfigError(
                "method", f"method '{cfg.method.name}' uses no soft labels", f"choose one of: {', '.join(cached)}"
            )
        with open_dict(cfg):
            cfg.method.soft_labels = "cached"
        pieces = build_pieces(cfg, student=False)
        root = Path(cfg.method.cache_dir or cfg.paths.cache_dir)
        started = time.monotonic()
        source = open_or_build(pieces.teachers, pieces.data, cfg.data, cfg.method, root, pieces.device)
        store = CacheStore(root, source.spec)
        ok = store.is_complete(verify=args.verify)
        info = {
            "cache_dir": str(store.dir),
            "key": store.spec.key,
            "kind": store.spec.kind,
            "samples": store.spec.num_samples,
            "slots": store.spec.slots,
            "bytes": store.data_path.stat().st_size,
            "seconds": round(time.monotonic() - started, 3),
            "complete": ok,
        }
        log.info("soft-label cache %s: %s", "ready" if ok else "FAILED verification", info)
        del source
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main))
