"""Helpers for tests that need the local Slurm cluster started by ``tests/slurm/up.sh``."""

from __future__ import annotations

import shutil
import subprocess

SLURM_PARTITION = "debug"
_READY_STATES = ("idle", "mix")


def slurm_available(partition: str = SLURM_PARTITION, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Tell whether Slurm can take a job now, for ``pytest.mark.skipif``.

    Slurm counts as available when ``sinfo`` answers within ``timeout_s`` seconds, ``partition``
    exists and is up, and at least one of its nodes is idle or mixed (responding, not drained).

    Returns:
        ``(True, description)`` when a job can start, else ``(False, reason)``; the reason says
        what is missing and that ``tests/slurm/up.sh`` (as root) starts a local cluster.
    """
    hint = "start a local cluster with `sudo tests/slurm/up.sh`"
    if shutil.which("sinfo") is None:
        return False, f"sinfo not found (Slurm client not installed); {hint}"
    command = ["sinfo", "--noheader", "--partition", partition, "--format", "%a %t %D"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {timeout_s:g} s (slurmctld not running?); {hint}"
    if result.returncode != 0:
        error = result.stderr.strip().splitlines()
        return False, f"sinfo failed: {error[-1] if error else f'exit {result.returncode}'}; {hint}"
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    if not rows:
        return False, f"Slurm partition {partition!r} does not exist; {hint}"
    if all(row[0] != "up" for row in rows):
        return False, f"Slurm partition {partition!r} is {rows[0][0]}, not up; {hint}"
    ready = [row for row in rows if row[0] == "up" and row[1] in _READY_STATES]
    if not ready:
        states = ", ".join(row[1] for row in rows)
        return False, f"no idle or mixed node in Slurm partition {partition!r} (node states: {states}); {hint}"
    nodes = sum(int(row[2]) for row in ready)
    return True, f"Slurm partition {partition!r} up with {nodes} idle or mixed node(s)"
