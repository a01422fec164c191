"""Detector bundles that run anywhere (issue 20 part 6): YOLOv3, SSD, Faster R-CNN and CenterNet
with ordinary Xavier weights, compiled here with the default command (Python 3.11, MXNet), keep
no MXNet stage (box_nms, ROIAlign, tile, gather_nd run in ONNX Runtime stages), and run in a
runtime-only venv on Python 3.12 with numpy 2 and no MXNet, giving what the bundle gives here and
the detections MXNet computes.

Real MXNet, the real TensorRT-RTX builder and parser, real ONNX Runtime on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from models import families
from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.verify import mxnet_forward

pytest.importorskip("gluoncv", reason="gluoncv is not installed (pip install -e '.[dev]')")

DETECTORS = ["yolo3", "ssd_mobilenet", "center_net", "faster_rcnn"]
RUNTIME_PYTHON = "3.12"


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detectors")


def _rows(ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> List[Tuple[int, float, np.ndarray]]:
    """The valid detections of batch item 0 (score > 0, id >= 0) as (class, score, box)."""
    return [(int(c), float(s), b) for c, s, b in
            zip(ids.reshape(-1), scores.reshape(-1), boxes.reshape(-1, 4)) if s > 0 and c >= 0]


def _matched(got: List[Tuple[int, float, np.ndarray]], ref: List[Tuple[int, float, np.ndarray]],
             tol: float) -> float:
    """The share of MXNet's detections found in ``got`` (same class, score and box within
    ``tol`` relative): order-insensitive, as NMS ties allow."""
    if not ref:
        return 1.0 if not got else 0.0
    scale = max(1.0, max(float(np.abs(b).max()) for _, _, b in ref))
    found = sum(any(c == gc and abs(s - gs) <= tol * max(1.0, abs(s))
                    and float(np.abs(b - gb).max()) <= tol * scale for gc, gs, gb in got)
                for c, s, b in ref)
    return found / len(ref)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_runs_without_mxnet_on_a_modern_stack(name: str, detector_dir: Path,
                                                       runtime_python, run_in_runtime_venv) -> None:
    params = families.MODELS[name](detector_dir)
    result = compile(CompileSettings(params=params, output=detector_dir / f"{name}.trtb"))
    report, manifest = result.report, result.manifest
    # every op kept out of the engines has an exact ONNX: nothing needs MXNet at run time
    assert report.mxnet_ops == 0 and not manifest["requires"]["mxnet"], report.to_text()
    # (CenterNet: with shape folding to a fixed point its gather_nd joins the engine: no ONNX
    # Runtime stage at all)
    assert report.engine_segments, report.to_text()
    assert "residual" not in {s["kind"] for s in manifest["stages"]}
    assert all(c.ok or not c.blocking for c in result.checks)

    rng = np.random.default_rng(11)
    feeds: Dict[str, np.ndarray] = {n: rng.random(shape).astype(dtype) for n, (shape, dtype)
                                    in families.INPUTS[name].items()}
    here = load(result.output, device="cpu")(**feeds)
    there = run_in_runtime_venv(runtime_python(RUNTIME_PYTHON), result.output, feeds)
    assert list(there) == list(here)
    for key, value in here.items():  # the same ONNX Runtime work, on numpy 2 and Python 3.12
        np.testing.assert_allclose(there[key], value, rtol=1e-5, atol=1e-5, err_msg=key)

    graph = load_graph(*resolve_model_files(params))
    reference = mxnet_forward(graph, feeds)
    ids, scores, boxes = (here[n] for n in graph.outputs)
    ref = _rows(*(reference[n] for n in graph.outputs))
    assert _matched(_rows(ids, scores, boxes), ref, 1e-3) >= 0.9, (name, len(ref))
