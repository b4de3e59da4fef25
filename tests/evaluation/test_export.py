"""`python -m meal.export`: student.pt (torchvision format), student.json sidecar, student.onnx matching
PyTorch's logits in onnxruntime."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meal.data import build_data
from meal.evaluate import main as evaluate_main
from meal.evaluation.target import run_config
from meal.export import main
from meal.models import build_model
from tests.evaluation.conftest import FinishedRun

# every test reads the export of the kd_run fixture: a real KD run of a few epochs
pytestmark = pytest.mark.slow

ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")


@pytest.fixture(scope="module")
def exported(kd_run: FinishedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "student"
    assert main([str(kd_run.run_dir), "--out", str(out)]) == 0
    return out


def test_sidecar_describes_the_student(kd_run: FinishedRun, exported: Path) -> None:
    info = json.loads((exported / "student.json").read_text())
    assert {k: info[k] for k in ("arch", "dataset", "classes", "in_channels", "image_size")} == {
        "arch": "fmnist_tiny",
        "dataset": "synthetic",
        "classes": 10,
        "in_channels": 1,
        "image_size": 12,
    }
    assert info["normalize"] is True and info["mean"] == [0.5] and info["std"] == [0.25]
    assert info["sha256"] == hashlib.sha256((exported / "student.pt").read_bytes()).hexdigest()
    assert info["onnx_sha256"] == hashlib.sha256((exported / "student.onnx").read_bytes()).hexdigest()
    for key in ("top1", "val_top1", "ece", "nll", "ensemble_agreement", "best_metric"):
        assert info["metrics"][key] == kd_run.result[key], key
    assert info["source"]["run_dir"] == str(kd_run.run_dir) and info["config"]["method"]["name"] == "kd"


def test_student_pt_is_a_plain_state_dict_of_the_final_weights(kd_run: FinishedRun, exported: Path) -> None:
    state = torch.load(exported / "student.pt", weights_only=True)
    final = torch.load(kd_run.run_dir / "checkpoints" / "last.pt", weights_only=False)["student"]
    assert list(state) == list(final) and not any(k.startswith("net.") for k in state)
    for key in state:
        assert torch.equal(state[key], final[key].cpu()), key
    net = build_model("fmnist_tiny", 10, 1, 12, taps=[]).net  # the bare network, as torchvision builds one
    net.load_state_dict(state)


def test_onnx_matches_pytorch_on_a_batch(kd_run: FinishedRun, exported: Path) -> None:
    cfg = run_config(kd_run.run_dir)
    data = build_data(cfg.data, Path("/nonexistent"), 0, torch.device("cpu"))
    x = next(iter(data.test)).x  # normalised as student.json says
    model = build_model("fmnist_tiny", 10, 1, 12, taps=[]).net.eval()
    model.load_state_dict(torch.load(exported / "student.pt", weights_only=True))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(exported / "student.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["logits"]
    for rows in (x.shape[0], 3):  # the batch dimension is dynamic
        got = session.run(["logits"], {"input": x[:rows].numpy()})[0]
        assert got.shape == (rows, 10)
        np.testing.assert_allclose(got, expected[:rows], rtol=1e-4, atol=1e-5)


def test_the_exported_student_evaluates_like_the_run(
    kd_run: FinishedRun, exported: Path, capsys: pytest.CaptureFixture
) -> None:
    assert evaluate_main([str(exported / "student.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "zoo" and report["top1"] == pytest.approx(kd_run.result["top1"])
    assert report["ensemble_agreement"] == pytest.approx(kd_run.result["ensemble_agreement"])


def test_a_changed_student_pt_is_refused(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from meal.entry import USER_ERROR, run_entry_point

    copy = tmp_path / "student.pt"
    copy.write_bytes((exported / "student.pt").read_bytes() + b"x")
    (tmp_path / "student.json").write_text((exported / "student.json").read_text())
    assert run_entry_point(evaluate_main, [str(copy)]) == USER_ERROR
