"""Every command a user runs ends a mistake in one `error:` line naming the key or file, with exit status 2.

launch.py, ``python -m meal.softlabels``, ``python -m meal.bench`` and ``python -m meal.report`` are each run
in a subprocess with bad inputs (the examples reported as tracebacks before; they run PARALLEL at a time);
Ctrl-C ends launch.py quietly with status 130.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, meal_environ

# every test starts a command in a subprocess
pytestmark = pytest.mark.slow

CHEAP = [
    "data=synthetic",
    "data.train_size=64",
    "data.test_size=32",
    "data.batch_size=32",
    "logger=none",
    "trainer.epochs=1",
    "trainer.progress=off",
    "trainer.threads=1",
]
TIMEOUT_S = 300
PARALLEL = min(4, max(2, os.cpu_count() or 2))  # the commands run at once (each is one single-threaded process)

# (id, command after `python`, the key or file the error line must name)
BAD_INPUTS = [
    (
        "launch-betas",
        ["launch.py", *CHEAP, "method=ce", "teachers=none", "optim=adamw", "optim.betas=[1.5,0.9]"],
        "optim.betas[0]",
    ),
    ("launch-threads", ["launch.py", *CHEAP, "method=ce", "teachers=none", "trainer.threads=-1"], "trainer.threads"),
    ("launch-workers", ["launch.py", *CHEAP, "method=ce", "teachers=none", "data.workers=-2"], "data.workers"),
    ("launch-misspelt-key", ["launch.py", *CHEAP, "trainer.thread=1"], "trainer.thread"),
    ("launch-unknown-paper", ["launch.py", *CHEAP, "paper=meal_v2_fmnst"], "paper"),
    (
        "launch-zoo-not-a-folder",
        ["launch.py", *CHEAP, "method=ce", "teachers=none", "trainer.export_to_zoo=true", "paths.zoo=$tmp/a_file/zoo"],
        "paths.zoo",
    ),
    (
        "softlabels-misspelt-key",
        ["-m", "meal.softlabels", "method=kd", "method.soft_label=cached"],
        "method.soft_label",
    ),
    ("softlabels-no-soft-labels", ["-m", "meal.softlabels", *CHEAP, "method=ce"], "method"),
    (
        "softlabels-bad-choice",
        ["-m", "meal.softlabels", "method=kd", "method.cache_dtype=float64"],
        "method.cache_dtype",
    ),
    ("softlabels-unknown-ablation", ["-m", "meal.softlabels", "method=kd", "ablation=fmnist_gama"], "ablation"),
    (
        "bench-betas",
        [
            "-m",
            "meal.bench",
            "--steps",
            "1",
            "--random-teachers",
            *CHEAP,
            "method=kd",
            "teachers=fmnist_pair",
            "optim=adamw",
            "optim.betas=[0.9,1.0]",
        ],
        "optim.betas[1]",
    ),
    ("bench-misspelt-key", ["-m", "meal.bench", "--steps", "1", "data.batchsize=8"], "data.batchsize"),
    ("bench-bad-choice", ["-m", "meal.bench", "--steps", "1", "trainer.precision=fp64"], "trainer.precision"),
    ("bench-steps", ["-m", "meal.bench", "--steps", "0"], "--steps"),
    ("launch-run-dir-under-a-file", ["launch.py", *CHEAP, "hydra.run.dir=$tmp/a_file/run"], "a_file/run"),
    ("report-missing-dir", ["-m", "meal.report", "$tmp/no_such_sweep"], "no_such_sweep"),
]
if not torch.backends.mps.is_available():
    BAD_INPUTS.append(
        ("launch-mps", ["launch.py", *CHEAP, "method=ce", "teachers=none", "trainer.device=mps"], "trainer.device")
    )


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *(a.replace("$tmp", str(tmp)) for a in args)]
    if args[0] == "launch.py" and not any(a.startswith("hydra.run.dir=") for a in args):
        command.append(f"hydra.run.dir={tmp}/run")
    env = meal_environ(tmp) | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def bad_input_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Path, Future[subprocess.CompletedProcess[str]]]]]:
    """The BAD_INPUTS commands selected in this session (a -k filter runs only those), each in its own folder
    (holding `a_file`, a file where a folder is expected), started PARALLEL at a time on first use."""
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params
    }
    root = tmp_path_factory.mktemp("bad_inputs")
    pool = ThreadPoolExecutor(PARALLEL)
    runs = {}
    for case, args, _ in BAD_INPUTS:
        if case in selected:
            folder = root / case
            folder.mkdir()
            (folder / "a_file").write_text("not a folder\n")
            runs[case] = (folder, pool.submit(_run, args, folder))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize(("case", "key"), [(i, k) for i, _, k in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS])
def test_a_bad_input_ends_in_one_error_line(
    bad_input_runs: dict[str, tuple[Path, Future[subprocess.CompletedProcess[str]]]], case: str, key: str
) -> None:
    folder, run = bad_input_runs[case]
    proc = run.result()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit status {proc.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if re.search(r"\berror: ", line)]
    assert len(errors) == 1, f"expected one error line:\n{output[-3000:]}"
    assert re.search(rf"error: \S*{re.escape(key)}(?![\w.\[])", errors[0]), f"{key} is not named: {errors[0]}"
    assert not (folder / "run" / "result.json").exists()


def _sigint_as_from_a_terminal() -> None:
    """In the child: SIGINT with its default disposition and unblocked, as a shell starts a command.

    A child inherits an ignored or blocked SIGINT from the process that starts it; in the whole suite the
    launched run once started with SIGINT not delivered and trained to the end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_before_training_ends_quietly_with_status_130(tmp_path: Path) -> None:
    """SIGINT as soon as Hydra has started the job (its .hydra/ record exists), before any training step."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "launch.py",
        *CHEAP,
        "method=ce",
        "teachers=none",
        "data.train_size=20000",
        f"hydra.run.dir={run}",
    ]
    env = meal_environ(tmp_path) | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_sigint_as_from_a_terminal,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not (run / ".hydra" / "config.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130, f"exit status {proc.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "KeyboardInterrupt" not in output
    assert "interrupted" in output.splitlines()[-1]
    assert not (run / "result.json").exists()
