"""Weight-stripped engines (issue 15, part 2): ``--strip-weights`` and ``trtc strip``.

What runs where:
- Here (CPU only, CI): TensorRT-RTX cannot build stripped engines without a GPU, so both commands
  must say so in one line and write nothing; the flag combinations that cannot work are usage
  errors; the manifest rules for stripped stages hold; a stripped stage's CPU path is untouched.
- On a machine with an NVIDIA GPU (``gpu`` tests; run on an H100): ``trtc strip`` rebuilds the
  committed fixture bundles' engines stripped (real builder), keeps the ONNX byte for byte,
  the CPU path gives the same outputs, and ``load(device='cuda')`` either refits and runs
  (a GPU TensorRT-RTX runs on) or refuses with the exact reason (the H100: compute capability 9.0).

The fixtures in tests/data are real bundles of tests/models/tiny.py's models (seeded Xavier
weights) written by ``trtc compile``: "tiny" (convolutions, ``--target all``) and "wide" (two dense
layers, 1 MB of weights, ``--target cpu``) and "pair" (two engines around a residual MXNet stage,
batch 1..4); :func:`test_fixtures_are_the_models` checks they still are, so the GPU tests need no
MXNet (on a machine without MXNet the mixed bundle's CPU path is not compared).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bundle_surgery as surgery
from models import tiny
from trtc.cli import app
from trtc.runtime import BundleError, IncompatibleError, load
from trtc.runtime.bundle import read_bundle

runner = CliRunner()
DATA = Path(__file__).resolve().parents[1] / "data"
ALL = DATA / "tiny-fp32.trtb"  # trtc compile tiny-0000.params
CPU_ONLY = DATA / "wide-fp32-cpu.trtb"  # trtc compile wide-0000.params --target cpu
# trtc compile pair-0000.params --exclude-op BatchNorm --input a:1..4x3x8x8 --input b:1..4x3x8x8
MIXED = DATA / "pair-mixed-dyn.trtb"  # two engines around a residual MXNet stage, dynamic batch
MODEL = {ALL: "tiny", CPU_ONLY: "wide", MIXED: "pair"}
PATHS = {ALL: ["cpu", "gpu"], CPU_ONLY: ["cpu"], MIXED: ["cpu", "gpu"]}
FIXTURES = pytest.mark.parametrize("fixture", [ALL, CPU_ONLY, MIXED], ids=["all", "cpu", "mixed"])


def strip_reason():
    """Why this machine's builder cannot build weight-stripped engines, or None (a real probe)."""
    try:
        from trtc.backends import get_backend

        return get_backend("auto").strip_unavailable_reason()
    except Exception as exc:  # no builder installed at all
        return f"no TensorRT builder: {exc}"


STRIP_REASON = strip_reason()
needs_no_strip = pytest.mark.skipif(STRIP_REASON is None,
                                    reason="this machine's builder CAN strip (a GPU is present)")
needs_strip = pytest.mark.skipif(STRIP_REASON is not None, reason=str(STRIP_REASON))


def _error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory) -> Path:
    pytest.importorskip("mxnet")
    return tiny.export("tiny", tmp_path_factory.mktemp("strip"))


@FIXTURES
def test_fixtures_are_the_models(tmp_path, fixture):
    """The committed bundles come from today's models and still load and run here."""
    pytest.importorskip("mxnet")
    from trtc.frontend import load_graph, resolve_model_files
    from trtc.verify import mxnet_forward

    name = MODEL[fixture]
    graph = load_graph(*resolve_model_files(tiny.export(name, tmp_path)))
    feeds = tiny.random_feeds(name, 3)
    ref = mxnet_forward(graph, feeds)[graph.outputs[0]]
    manifest = read_bundle(fixture).manifest
    assert manifest["source"]["params"]["sha256"] == graph.params_sha256
    assert manifest["paths"] == PATHS[fixture]
    if fixture == MIXED:
        assert [s["kind"] for s in manifest["stages"]] == ["engine", "residual", "engine"]
        assert manifest["inputs"][0]["min_shape"][0] == 1 and manifest["inputs"][0]["max_shape"][0] == 4
    got = load(fixture, device="cpu")(**feeds)[graph.outputs[0]]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


# ---------------------------------------------------------------------------------------------
# CPU-only machine (CI): one clear line, nothing written
# ---------------------------------------------------------------------------------------------
@needs_no_strip
def test_compile_strip_weights_says_in_one_line_it_needs_a_gpu(tiny_params, tmp_path):
    out = tmp_path / "m.trtb"
    result = runner.invoke(app, ["compile", str(tiny_params), "--strip-weights", "-o", str(out)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "--strip-weights" in line and "GPU" in line and "trtc strip" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@needs_no_strip
def test_strip_command_says_in_one_line_it_needs_a_gpu(tmp_path):
    source = tmp_path / "in.trtb"
    shutil.copy(ALL, source)
    before = source.read_bytes()
    for out in (tmp_path / "out.trtb", source):  # a new file, or the bundle in place
        result = runner.invoke(app, ["strip", str(source), "-o", str(out)])
        assert result.exit_code == 2
        assert "weight-stripped" in _error_line(result) and "GPU" in _error_line(result)
        assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.trtb"]


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_strip_weights_needs_target_all(tiny_params, tmp_path, target):
    out = tmp_path / "m.trtb"
    result = runner.invoke(app, ["compile", str(tiny_params), "--strip-weights", "--target",
                                 target, "-o", str(out)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert f"--strip-weights with --target {target}" in line and "--target all" in line, line
    assert not out.exists()


def test_strip_refuses_bundles_without_the_onnx_to_refit_from(tmp_path):
    members = surgery.members_of(ALL)
    manifest = surgery.manifest_of(members)
    onnx = [s.pop("onnx") for s in manifest["stages"] if s["kind"] == "engine"]
    manifest["paths"] = ["gpu"]
    manifest["members"] = {k: v for k, v in manifest["members"].items() if k not in onnx}
    gpu_only = tmp_path / "gpu.trtb"
    gpu_only.write_bytes(surgery.repack([m for m in members if m[0] not in onnx], manifest))
    read_bundle(gpu_only)  # a valid --target gpu bundle
    result = runner.invoke(app, ["strip", str(gpu_only), "-o", str(tmp_path / "out.trtb")])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "no ONNX to refit from" in line and "--target all or --target cpu" in line, line


def test_strip_checks_its_output_before_any_work(tmp_path):
    """Before reading the bundle or probing the builder: never a file that is not a bundle, a
    directory or a missing directory (on a GPU machine these would otherwise fail after the build)."""
    precious = tmp_path / "model-0000.params"
    precious.write_bytes(b"weights")
    for out, phrase in ((precious, "not a trtc bundle"), (tmp_path, "is a directory"),
                        (tmp_path / "nodir" / "x.trtb", "does not exist")):
        result = runner.invoke(app, ["strip", str(ALL), "-o", str(out)])
        assert result.exit_code == 2 and phrase in _error_line(result), result.output
    assert precious.read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-0000.params"]


def test_strip_weights_with_dry_run_reports_without_probing(tiny_params, tmp_path):
    result = runner.invoke(app, ["compile", str(tiny_params), "--strip-weights", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "partition:" in result.stderr and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The manifest of a stripped bundle
# ---------------------------------------------------------------------------------------------
def _stripped_copy(tmp_path: Path, edit=None) -> Path:
    """The fixture with its engine stage marked weight-stripped (what `trtc strip` writes, less
    the rebuilt plan: the manifest rules and the CPU path do not depend on the plan's bytes)."""
    members = surgery.members_of(ALL)
    manifest = surgery.manifest_of(members)
    for stage in manifest["stages"]:
        if stage["kind"] == "engine":
            stage["weights"] = "stripped"
    if edit:
        edit(manifest)
    out = tmp_path / "stripped.trtb"
    out.write_bytes(surgery.repack(members, manifest))
    return out


def test_a_stripped_stage_runs_unchanged_on_the_cpu_path(tmp_path):
    stripped = _stripped_copy(tmp_path)
    feeds = tiny.random_feeds("tiny", 1)
    (name,) = read_bundle(ALL).manifest["outputs"][0:1]
    want = load(ALL, device="cpu")(**feeds)[name["name"]]
    got = load(stripped, device="cpu")(**feeds)[name["name"]]
    assert np.array_equal(got, want)


def test_stripped_stage_rules(tmp_path):
    def bogus(manifest):
        manifest["stages"][0]["weights"] = "half"

    with pytest.raises(BundleError, match=r"weights: must be 'included' or 'stripped'"):
        read_bundle(_stripped_copy(tmp_path, bogus))

    def no_onnx(manifest):  # stripped, and the ONNX it refits from dropped
        manifest["paths"] = ["gpu"]
        del manifest["stages"][0]["onnx"]

    with pytest.raises(BundleError, match=r"missing field 'onnx'"):
        read_bundle(_stripped_copy(tmp_path, no_onnx))


def test_stripped_engine_needs_a_runtime_that_can_refit():
    """The lean runtime has no ONNX parser: a stripped engine cannot be refitted with it."""
    pytest.importorskip("tensorrt_rtx")
    from trtc.runtime.stages import engine_cuda

    stage = copy.deepcopy(read_bundle(ALL).engine_stages[0])
    cc = stage["compute_capabilities"][0]
    assert engine_cuda.backend_unavailable_reason(stage, cc) is None
    stage["weights"] = "stripped"
    assert engine_cuda.backend_unavailable_reason(stage, cc) is None  # tensorrt_rtx can refit


# ---------------------------------------------------------------------------------------------
# A machine with an NVIDIA GPU: the real stripped build
# ---------------------------------------------------------------------------------------------
def _cpu_outputs(path: Path, model: str):
    return load(path, device="cpu")(**tiny.random_feeds(model, 2))


def _gpu_load_or_reason(path: Path, model: str, want):
    """Refit and run on the GPU where TensorRT-RTX runs; else the exact refusal."""
    from trtc.runtime import cuda
    from trtc.runtime.stages.engine_cuda import runtime_unavailable_reason

    major, minor = cuda.compute_capability(0)
    reason = runtime_unavailable_reason("tensorrt_rtx", f"{major}.{minor}")
    if reason is None:
        got = load(path, device="cuda")(**tiny.random_feeds(model, 2))
        for name, value in want.items():
            scale = float(np.abs(value).max()) or 1.0
            assert np.abs(got[name] - value).max() <= 1e-2 * scale  # TF32 convolutions
    else:
        with pytest.raises(IncompatibleError, match="compute capability"):
            load(path, device="cuda")


@pytest.mark.gpu
@needs_strip
@FIXTURES
def test_strip_builds_weight_stripped_engines(tmp_path, fixture):
    out = tmp_path / "stripped.trtb"
    result = runner.invoke(app, ["strip", str(fixture), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    source, stripped = read_bundle(fixture), read_bundle(out)
    assert stripped.manifest["paths"] == ["cpu", "gpu"]
    for before, after, report in zip(source.engine_stages, stripped.engine_stages,
                                     summary["engines"]):
        assert after["weights"] == "stripped" and report["stage"] == after["name"]
        assert stripped.read_member(after["onnx"]) == source.read_member(before["onnx"])
        assert report["plan_bytes"] == after["bytes"] == len(stripped.read_member(after["engine"]))
        assert report["plan_bytes_before"] == before.get("bytes", 0)
        assert {t["name"] for t in after["io"]} == {t["name"] for t in after["inputs"] + after["outputs"]}
        assert after.get("profile") == before.get("profile")  # a dynamic engine keeps its range
    assert [s["kind"] for s in stripped.manifest["stages"]] == [s["kind"] for s in source.manifest["stages"]]
    if fixture == MIXED and importlib.util.find_spec("mxnet") is None:
        return  # its residual stage needs MXNet to run; the stripped build is what was tested
    want = _cpu_outputs(fixture, MODEL[fixture])
    got = _cpu_outputs(out, MODEL[fixture])
    assert all(np.array_equal(got[k], want[k]) for k in want)  # the CPU path is untouched
    _gpu_load_or_reason(out, MODEL[fixture], want)


@pytest.mark.gpu
@needs_strip
def test_a_stripped_plan_leaves_the_weights_out():
    """"wide" holds 1 MB of weights: its stripped plan is smaller than a plan with weights built
    here from the same ONNX by at least 90% of them (each weight is stored once: in the ONNX)."""
    import onnx
    from onnx import numpy_helper

    from trtc.backends import get_backend

    bundle = read_bundle(CPU_ONLY)
    (stage,) = bundle.engine_stages
    onnx_bytes = bundle.read_member(stage["onnx"])
    weights = sum(numpy_helper.to_array(t).nbytes
                  for t in onnx.load_from_string(onnx_bytes).graph.initializer)
    assert weights > 1_000_000
    backend = get_backend("auto")
    plain = len(backend.build(onnx_bytes).plan)
    stripped = len(backend.build(onnx_bytes, strip=True).plan)
    assert plain - stripped >= 0.9 * weights, (plain, stripped, weights)


@pytest.mark.gpu
@needs_strip
def test_compile_strip_weights(tiny_params, tmp_path):
    pytest.importorskip("mxnet")
    out = tmp_path / "m.trtb"
    result = runner.invoke(app, ["compile", str(tiny_params), "--strip-weights", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).manifest
    assert all(s.get("weights") == "stripped" for s in manifest["stages"] if s["kind"] == "engine")
    _gpu_load_or_reason(out, "tiny", _cpu_outputs(out, "tiny"))


def test_inspect_says_the_weights_are_stored_once(tmp_path):
    stripped = _stripped_copy(tmp_path)
    result = runner.invoke(app, ["inspect", str(stripped)])
    assert result.exit_code == 0, result.output
    assert "gpu (weight-stripped engine plans" in result.stdout
    assert "weights: stored once, in the ONNX" in result.stdout and ", weight-stripped" in result.stdout
    summary = json.loads(runner.invoke(app, ["inspect", str(stripped), "--json"]).stdout)
    assert summary["engine_weights"] == "stripped"
    plain = json.loads(runner.invoke(app, ["inspect", str(ALL), "--json"]).stdout)
    assert plain["engine_weights"] == "included"
    assert "stored twice" in runner.invoke(app, ["inspect", str(ALL)]).stdout
