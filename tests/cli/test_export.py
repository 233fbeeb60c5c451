"""petloc-export: the ONNX graph computes what the PyTorch model computes, at any batch size."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from petloc import CONFIG_DIR
from petloc.checkpoint import load_model
from petloc.cli.export import OnnxMismatchError, check_onnx, load_check_images
from petloc.models.deployed import InferenceModel
from tests.helpers import (
    TrainedRun,  # the session's trained_run fixture (tests/conftest.py)
    run_export,
)

DEFAULTS = OmegaConf.load(CONFIG_DIR / "export.yaml")  # atol_px, atol_prob, n_check


@pytest.fixture(scope="module")
def exported(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Run the console entry once: (ONNX file, the JSON report it printed last)."""
    onnx_path, report, lines = run_export(trained_run.best, tmp_path_factory.mktemp("export"))
    assert any("median latency: PyTorch" in line and "onnxruntime" in line for line in lines)
    return onnx_path, report


def test_export_reports_the_check_and_both_latencies(exported: tuple[Path, dict]) -> None:
    onnx_path, report = exported
    assert onnx_path.is_file() and not list(onnx_path.parent.glob("*.data"))  # weights inline
    assert report["outputs"] == ["box", "score", "class_prob"]
    assert report["n_check_images"] == 8  # real images of the trained dataset, not noise
    # the zoom-in crop as matrix products: onnxruntime's GridSample/RoiAlign loops are single-threaded
    ops = {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert "MatMul" in ops and not ops & {"GridSample", "RoiAlign"}
    # a 2-epoch checkpoint passes the default tolerances (pixels of the 64 px input, probabilities)
    assert 0 <= report["max_box_diff_px"] <= DEFAULTS.atol_px
    assert 0 <= report["max_prob_diff"] <= DEFAULTS.atol_prob
    for engine in ("torch", "onnxruntime"):  # the options' cost against the same network's single look
        latency, single = report[f"{engine}_latency_ms"], report[f"{engine}_single_look_ms"]
        assert latency > 0 and single > 0
        assert report[f"{engine}_ratio"] == pytest.approx(latency / single)


def test_onnx_matches_pytorch_at_other_batch_sizes(
    trained_run: TrainedRun, exported: tuple[Path, dict]
) -> None:
    onnx_path, _ = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "images" and graph_input.type == "tensor(uint8)"
    assert isinstance(graph_input.shape[0], str) and graph_input.shape[1:] == [64, 64, 3]  # dynamic batch
    module, cfg = load_model(trained_run.best)
    reader = instantiate(cfg.data).image_reader()
    files = sorted((trained_run.data_root / "images").glob("*.jpg"))[-5:]  # not the export's check images
    images = torch.from_numpy(np.stack([reader(p)[0] for p in files]))
    for batch in (images[:1], images[:3], images):
        box, score, class_prob = session.run(None, {"images": batch.numpy()})
        with torch.inference_mode():
            expected = module.predict_boxes(batch)
        np.testing.assert_allclose(box * 64, expected["box"].numpy() * 64, rtol=0, atol=DEFAULTS.atol_px)
        np.testing.assert_allclose(
            class_prob, expected["class_prob"].numpy(), rtol=0, atol=DEFAULTS.atol_prob
        )
        np.testing.assert_allclose(score, expected["score"].numpy(), rtol=0, atol=DEFAULTS.atol_prob)


@pytest.mark.parametrize("plant", ["box_offsets", "refine_margin"])
def test_check_fails_loudly_when_the_graph_differs(
    trained_run: TrainedRun, exported: tuple[Path, dict], plant: str
) -> None:
    """Two small real mismatches, each caught at the default tolerances: the box regression's bias
    moved by 0.05 (a fraction of a cell), and the zoom-in crop 1.5 instead of 1.6 times the box."""
    onnx_path, _ = exported
    module, _ = load_model(trained_run.best)
    options = None
    if plant == "box_offsets":
        with torch.no_grad():
            module.head.pred.bias[1:] += 0.05  # the PyTorch model no longer is the exported one
    else:
        options = dataclasses.replace(module.inference, refine=True, refine_margin=1.5)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    _, model_cfg = load_model(trained_run.best)
    images = load_check_images(DEFAULTS, model_cfg, instantiate(model_cfg.data).image_reader())
    with pytest.raises(OnnxMismatchError, match=r"output box .* px; the exported graph"):
        check_onnx(session, InferenceModel(module, options), images, DEFAULTS.atol_px, DEFAULTS.atol_prob)


def test_check_images_come_from_check_input_else_the_dataset_else_seeded_noise(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    _, model_cfg = load_model(trained_run.best)
    reader = instantiate(model_cfg.data).image_reader()
    folder = tmp_path / "check"
    folder.mkdir()
    files = sorted((trained_run.data_root / "images").glob("*.jpg"))[:3]
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_text("not an image")

    given = load_check_images(make_cfg(f"check_input={folder}", config_name="export"), model_cfg, reader)
    assert torch.equal(given, torch.from_numpy(np.stack([reader(p)[0] for p in files])))
    dataset = load_check_images(make_cfg("n_check=4", config_name="export"), model_cfg, reader)
    # the dataset's first boxed images (records are sorted by id: the XML stems)
    stems = sorted(p.stem for p in (trained_run.data_root / "annotations" / "xmls").glob("*.xml"))[:4]
    first = [trained_run.data_root / "images" / f"{stem}.jpg" for stem in stems]
    assert torch.equal(dataset, torch.from_numpy(np.stack([reader(p)[0] for p in first])))

    gone = OmegaConf.merge(model_cfg, {"data": {"root": str(tmp_path / "gone")}})
    noise = load_check_images(make_cfg("n_check=3", config_name="export"), gone, reader)
    assert noise.shape == (3, 64, 64, 3) and noise.dtype == torch.uint8
    assert torch.equal(noise, load_check_images(make_cfg("n_check=3", config_name="export"), gone, reader))
