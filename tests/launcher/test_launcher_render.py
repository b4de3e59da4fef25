"""What `hydra/launcher=slurm` and `hydra/launcher=local` hand to submitit, for every option of the
`resources=` and `cluster=` groups.

The Hydra submitit plugin's own `launch()` runs with `submitit.AutoExecutor` replaced by a recorder:
the recorder keeps the exact keyword arguments of the constructor and of `update_parameters`,
forwards them to a real AutoExecutor (so submitit itself rejects an unknown or ill-typed parameter)
and submits nothing. The Slurm batch script is then rendered from that executor's parameters the way
submitit renders a job array, and checked line by line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from submitit.slurm.slurm import SlurmExecutor

from meal.config import register

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "render_test"

# What each resources= option asks for (conf/resources/*.yaml); gpus_per_node None means "no GPUs".
RESOURCES: dict[str, dict[str, Any]] = {
    "cpu": {
        "nodes": 1,
        "gpus_per_node": None,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
        "mem_gb": 2,
        "timeout_min": 60,
        "array_parallelism": 2,
    },
    "1gpu": {
        "nodes": 1,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "timeout_min": 720,
        "array_parallelism": 64,
    },
    "8gpu": {
        "nodes": 1,
        "gpus_per_node": 8,
        "tasks_per_node": 8,
        "cpus_per_task": 8,
        "mem_gb": 480,
        "timeout_min": 1440,
        "array_parallelism": 8,
    },
    "2x8gpu": {
        "nodes": 2,
        "gpus_per_node": 8,
        "tasks_per_node": 8,
        "cpus_per_task": 8,
        "mem_gb": 480,
        "timeout_min": 1440,
        "array_parallelism": 4,
    },
}
SIGNAL_DELAY_S = 120
MAX_NUM_TIMEOUT = 3

EXAMPLE_SITE_SETUP = ["module load cuda/12.4", "source ~/venvs/meal/bin/activate", "export MEAL_DATA=/datasets"]
# Site data of each cluster= option (conf/cluster/*.yaml).
CLUSTERS: dict[str, dict[str, Any]] = {
    "localhost": {
        "partition": "debug",
        "account": None,
        "qos": None,
        "constraint": None,
        "exclude": None,
        "setup": [],
        "additional_parameters": {},
    },
    "example_site": {
        "partition": "gpu",
        "account": "my_project",
        "qos": "normal",
        "constraint": None,
        "exclude": None,
        "setup": EXAMPLE_SITE_SETUP,
        "additional_parameters": {},
    },
}
# Slurm fields of the plugin's schema that no conf/ file sets.
UNSET_SLURM_FIELDS = ("comment", "gres", "cpus_per_gpu", "gpus_per_task", "mem_per_gpu", "mem_per_cpu")

SLURM_CASES = [(r, c) for c in CLUSTERS for r in RESOURCES]


@dataclass
class FakeJob:
    """What `map_array` returns in place of a submitted job: its result is already there."""

    job_num: int

    def results(self) -> list[JobReturn]:
        """The job's return, as submitit's Job.results() gives it (one entry per task)."""
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=float(self.job_num))]


@dataclass
class RecordingExecutor:
    """Stands in for `submitit.AutoExecutor`: records every call, forwards the parameters to a real
    AutoExecutor and submits nothing."""

    real: submitit.AutoExecutor
    init_kwargs: dict[str, Any]
    parameters: dict[str, Any] | None = None
    submitted: list[tuple[Any, ...]] = field(default_factory=list)
    function: Callable[..., Any] | None = None

    def update_parameters(self, **kwargs: Any) -> None:
        """Record the parameters and let submitit validate and translate them."""
        self.parameters = kwargs
        self.real.update_parameters(**kwargs)

    def map_array(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[FakeJob]:
        """Record the job array instead of submitting it."""
        self.function = fn
        self.submitted = list(zip(*iterables, strict=True))
        return [FakeJob(job_num=args[2]) for args in self.submitted]


@pytest.fixture
def executors(monkeypatch: pytest.MonkeyPatch) -> list[RecordingExecutor]:
    """Every AutoExecutor the launcher creates during the test, in order (no Slurm needed)."""
    created: list[RecordingExecutor] = []
    real_auto_executor = submitit.AutoExecutor

    def factory(folder: str, cluster: str | None = None, **kwargs: Any) -> RecordingExecutor:
        real = real_auto_executor(folder=folder, cluster=cluster, **kwargs)
        recorder = RecordingExecutor(real=real, init_kwargs={"folder": folder, "cluster": cluster, **kwargs})
        created.append(recorder)
        return recorder

    monkeypatch.setattr(submitit, "AutoExecutor", factory)
    # SlurmExecutor refuses to start where `srun` is not on PATH; the render does not need it.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    return created


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


def _never_called(cfg: Any) -> float:
    raise AssertionError("the task function must not run: nothing is submitted")


def launch_sweep(overrides: Sequence[str], sweep_dir: Path, n_jobs: int) -> tuple[Launcher, list[JobReturn]]:
    """Compose conf/ as `launch.py -m` does and run the configured launcher's `launch()` over
    `n_jobs` jobs (`seed=0..n_jobs-1`)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(
            "config",
            overrides=[*overrides, f"experiment={EXPERIMENT}", f"hydra.sweep.dir={sweep_dir}"],
            return_hydra_config=True,
        )
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=_never_called, config=cfg
        )
    returns = launcher.launch([[f"seed={i}"] for i in range(n_jobs)], initial_job_idx=0)
    return launcher, list(returns)


def expected_slurm_parameters(resources: str, cluster: str) -> dict[str, Any]:
    """The exact keyword arguments the plugin passes to `AutoExecutor.update_parameters`."""
    res, site = RESOURCES[resources], CLUSTERS[cluster]
    generic = ("timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb")
    params: dict[str, Any] = {key: res[key] for key in generic}
    params.update(
        name=EXPERIMENT,
        stderr_to_stdout=True,
        slurm_array_parallelism=res["array_parallelism"],
        slurm_signal_delay_s=SIGNAL_DELAY_S,
    )
    params.update({f"slurm_{key}": value for key, value in site.items()})
    params.update({f"slurm_{key}": None for key in UNSET_SLURM_FIELDS})
    return params


def render_sbatch(recorder: RecordingExecutor) -> str:
    """The sbatch script submitit would submit for the recorded job array (as
    SlurmExecutor._internal_process_submissions builds it), without submitting it."""
    slurm = recorder.real._executor
    assert isinstance(slurm, SlurmExecutor)
    array_ex = SlurmExecutor(slurm.folder, slurm.max_num_timeout)
    array_ex.update_parameters(**slurm.parameters)
    array_ex.parameters["map_count"] = len(recorder.submitted)
    return array_ex._make_submission_file_text(slurm._submitit_command_str, uid="render")


def sbatch_flags(script: str) -> list[str]:
    """The `#SBATCH` lines of a batch script."""
    return [line for line in script.splitlines() if line.startswith("#SBATCH ")]


@pytest.mark.slow
@pytest.mark.parametrize(("resources", "cluster"), SLURM_CASES)
def test_slurm_launcher_parameters(
    resources: str, cluster: str, tmp_path: Path, executors: list[RecordingExecutor]
) -> None:
    launcher, returns = launch_sweep(
        ["hydra/launcher=slurm", f"resources={resources}", f"cluster={cluster}"], tmp_path, n_jobs=3
    )

    assert type(launcher).__name__ == "SlurmLauncher"
    (recorder,) = executors
    assert recorder.init_kwargs == {
        "folder": f"{tmp_path}/.submitit/%j",
        "cluster": "slurm",
        "slurm_max_num_timeout": MAX_NUM_TIMEOUT,
    }
    assert recorder.parameters == expected_slurm_parameters(resources, cluster)
    if recorder.parameters["gpus_per_node"]:
        assert recorder.parameters["tasks_per_node"] == recorder.parameters["gpus_per_node"]

    slurm = recorder.real._executor
    assert slurm.max_num_timeout == MAX_NUM_TIMEOUT
    assert ("gpus_per_node" in slurm.parameters) == (RESOURCES[resources]["gpus_per_node"] is not None)

    assert recorder.function is launcher
    assert [args[:4] for args in recorder.submitted] == [
        ([f"seed={i}"], "hydra.sweep.dir", i, f"job_id_for_{i}") for i in range(3)
    ]
    assert [r.return_value for r in returns] == [0.0, 1.0, 2.0]
    assert tmp_path.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize(("resources", "cluster"), SLURM_CASES)
def test_slurm_sbatch_lines(resources: str, cluster: str, tmp_path: Path, executors: list[RecordingExecutor]) -> None:
    launch_sweep(["hydra/launcher=slurm", f"resources={resources}", f"cluster={cluster}"], tmp_path, n_jobs=3)
    res, site = RESOURCES[resources], CLUSTERS[cluster]
    flags = sbatch_flags(render_sbatch(executors[0]))

    expected = {
        f"#SBATCH --nodes={res['nodes']}",
        f"#SBATCH --ntasks-per-node={res['tasks_per_node']}",
        f"#SBATCH --cpus-per-task={res['cpus_per_task']}",
        f"#SBATCH --mem={res['mem_gb']}GB",
        f"#SBATCH --time={res['timeout_min']}",
        f"#SBATCH --signal=USR2@{SIGNAL_DELAY_S}",
        f"#SBATCH --array=0-2%{min(3, res['array_parallelism'])}",
        f"#SBATCH --partition={site['partition']}",
        f"#SBATCH --job-name={EXPERIMENT}",
    }
    assert expected <= set(flags)
    gpu_flags = [f for f in flags if f.startswith("#SBATCH --gpus-per-node=")]
    if res["gpus_per_node"] is None:
        assert gpu_flags == []
    else:
        assert gpu_flags == [f"#SBATCH --gpus-per-node={res['gpus_per_node']}"]
    for key in ("account", "qos"):
        lines = [f for f in flags if f.startswith(f"#SBATCH --{key}=")]
        assert lines == ([f"#SBATCH --{key}={site[key]}"] if site[key] else [])
    assert not any(f.startswith(("#SBATCH --error=", "#SBATCH --constraint=", "#SBATCH --exclude=")) for f in flags)


@pytest.mark.slow
def test_slurm_2x8gpu_example_site_script(tmp_path: Path, executors: list[RecordingExecutor]) -> None:
    """The whole batch script of a 6-job sweep on two 8-GPU nodes per job."""
    launch_sweep(["hydra/launcher=slurm", "resources=2x8gpu", "cluster=example_site"], tmp_path, n_jobs=6)
    script = render_sbatch(executors[0])

    assert sbatch_flags(script) == [
        "#SBATCH --account=my_project",
        "#SBATCH --array=0-5%4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=8",
        f"#SBATCH --job-name={EXPERIMENT}",
        "#SBATCH --mem=480GB",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={tmp_path}/.submitit/%A_%a/%A_%a_0_log.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=normal",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=1440",
        "#SBATCH --wckey=submitit",
    ]
    lines = script.splitlines()
    setup_at = lines.index("# setup")
    assert lines[setup_at + 1 : setup_at + 4] == EXAMPLE_SITE_SETUP
    srun_at = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert srun_at > setup_at + 3
    assert lines[srun_at].endswith(f"-u -m submitit.core._submit {tmp_path}/.submitit/%j")


@pytest.mark.slow
@pytest.mark.parametrize("resources", list(RESOURCES))
def test_local_launcher_parameters(resources: str, tmp_path: Path, executors: list[RecordingExecutor]) -> None:
    launcher, returns = launch_sweep(["hydra/launcher=local", f"resources={resources}"], tmp_path, n_jobs=2)
    res = RESOURCES[resources]

    assert type(launcher).__name__ == "LocalLauncher"
    (recorder,) = executors
    assert recorder.init_kwargs == {"folder": f"{tmp_path}/.submitit/%j", "cluster": "local"}
    assert recorder.parameters == {
        "name": EXPERIMENT,
        "stderr_to_stdout": False,
        "timeout_min": res["timeout_min"],
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": res["gpus_per_node"] or 0,
        "cpus_per_task": res["cpus_per_task"],
        "mem_gb": res["mem_gb"],
    }
    local = recorder.real._executor
    assert local.parameters["gpus_per_node"] == (res["gpus_per_node"] or 0)
    assert local.parameters["timeout_min"] == res["timeout_min"]
    assert [r.return_value for r in returns] == [0.0, 1.0]


def _slurm_reachable() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slurm
def test_localhost_cpu_script_accepted_by_slurm(tmp_path: Path, executors: list[RecordingExecutor]) -> None:
    """The real slurmctld validates the rendered script (`sbatch --test-only` submits nothing)."""
    if not _slurm_reachable():
        pytest.skip("no reachable Slurm cluster (tests/slurm/up.sh starts one)")
    launch_sweep(["hydra/launcher=slurm", "resources=cpu", "cluster=localhost"], tmp_path, n_jobs=2)
    script = tmp_path / "render.sbatch"
    script.write_text(render_sbatch(executors[0]))

    out = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert "partition debug" in out.stderr
