#!/usr/bin/env bash
# Copy the small files of every run of the suite's sweeps (result.json, metrics.jsonl, Hydra's
# config.yaml, overrides.yaml and hydra.yaml, which holds the config-group choices, and the sweep
# manifests) into experiments/results/runs/<sweep>/, where `python -m meal.report` reads them like
# the sweep directories themselves. Checkpoints, W&B files and
# logs stay behind.
#
#   bash experiments/suite/archive_runs.sh [SWEEPS_DIR]     # default: multirun/suite
set -euo pipefail
cd "$(dirname "$0")/../.."
src="${1:-multirun/suite}"
dst=experiments/results/runs
for sweep in "$src"/*/; do
  name=$(basename "$sweep")
  compgen -G "$sweep*/result.json" >/dev/null || continue
  for result in "$sweep"*/result.json; do
    [ -f "$result" ] || continue
    job=$(dirname "$result")
    out="$dst/$name/$(basename "$job")"
    mkdir -p "$out/.hydra"
    cp "$job/result.json" "$job/metrics.jsonl" "$out/"
    cp "$job/.hydra/config.yaml" "$job/.hydra/overrides.yaml" "$job/.hydra/hydra.yaml" "$out/.hydra/"
  done
  for manifest in "$sweep"manifest*.json; do
    [ -f "$manifest" ] && cp "$manifest" "$dst/$name/"
  done
done
echo "archived $(find "$dst" -name result.json | wc -l) runs into $dst"
