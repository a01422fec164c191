"""Serving bundles on a real NVIDIA Triton Inference Server (issue 13).

`trtc triton-repo` writes the repository, a real ``tritonserver`` (the nvidia-pytriton wheel's, from
the ``serve`` extra, or one on PATH) serves it on free loopback ports, and ``tritonclient`` talks to
it over HTTP and gRPC: outputs equal ``trtc.runtime``'s, bad requests get error responses while
the server keeps serving, concurrent requests are batched, health/ready/config/metrics answer. The
server is started once for the module and stopped by its PID at the end, whatever happened.
Everything skips, with the exact reason, where no tritonserver can start here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from models import tiny
from trtc import CompileSettings, compile
from trtc import triton
from trtc.runtime import load
from trtc.runtime.bundle import read_bundle
from trtc.runtime.errors import IncompatibleError, UsageError

MAX_BATCH = 8
QUEUE_DELAY_US = 50_000  # generous: the batching test's concurrent requests must meet in the queue


# ----------------------------------------------------------------------------------------------
# bundles and the server
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """static: tiny 1x3x16x16; mixed: pair with a residual MXNet stage; batch: tiny with a
    dynamic batch 1..8; hw: tiny with dynamic height/width 8..16 (not a batch axis)."""
    out = tmp_path_factory.mktemp("triton-bundles")
    params = tiny.export("tiny", out)
    made = {"static": tiny.bundle("tiny", tmp_path_factory),
            "mixed": tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))}
    for key, spec in (("batch", ((1, MAX_BATCH), 3, 16, 16)), ("hw", (1, 3, (8, 16), (8, 16)))):
        made[key] = compile(CompileSettings(params=params, output=out / f"tiny-{key}.trtb",
                                            inputs={"data": spec})).output
    return made


def _free_ports(count: int) -> List[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _server(repo: Path, **kwargs: Any) -> triton.TritonServer:
    http, grpc, metrics = _free_ports(3)
    return triton.TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                               **kwargs)


@pytest.fixture(scope="module")
def server_binary(tmp_path_factory: pytest.TempPathFactory) -> triton.ServerBinary:
    """The tritonserver, proven to start here on an empty repository (else: skip, saying why)."""
    try:
        binary = triton.find_tritonserver()
    except IncompatibleError as exc:
        pytest.skip(f"no Triton server here: {exc}")
    empty = tmp_path_factory.mktemp("empty-repo")
    try:
        with _server(empty, binary=binary, startup_timeout=60):
            pass
    except triton.TritonServerError as exc:
        pytest.skip(f"tritonserver ({binary.path}) cannot start here: {exc}")
    return binary


@pytest.fixture(scope="module")
def server(bundles: Dict[str, Path], server_binary: triton.ServerBinary,
           tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("model-repository")
    triton.write_repository([bundles["static"], bundles["mixed"], bundles["hw"]], repo,
                            names=["tiny", "pair", "tiny_hw"], device="cpu")
    triton.write_repository([bundles["batch"]], repo, names=["tiny_batch"], device="cpu",
                            max_queue_delay_us=QUEUE_DELAY_US)
    running = _server(repo, binary=server_binary)
    with running:  # stopped (SIGTERM, then SIGKILL of its process group) whatever the tests do
        yield running
    assert running.process.poll() is not None


def _get(url: str) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _reference(bundle: Path, **feeds: np.ndarray) -> Dict[str, np.ndarray]:
    return load(bundle, device="cpu")(**feeds)


def _http_infer(server: Any, model: str, feeds: Dict[str, np.ndarray]):
    """``server``: a TritonServer or its host:port."""
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    client = http.InferenceServerClient(getattr(server, "http_url", server))
    try:
        inputs = []
        for name, value in feeds.items():
            item = http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            item.set_data_from_numpy(value)
            inputs.append(item)
        return client.infer(model, inputs)
    finally:
        client.close()


def _grpc_infer(server: Any, model: str, feeds: Dict[str, np.ndarray]):
    """``server``: a TritonServer or its host:port."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import np_to_triton_dtype

    client = grpc.InferenceServerClient(getattr(server, "grpc_url", server))
    try:
        inputs = []
        for name, value in feeds.items():
            item = grpc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            item.set_data_from_numpy(value)
            inputs.append(item)
        return client.infer(model, inputs)
    finally:
        client.close()


def _rand(shape: Tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _metric(server: triton.TritonServer, name: str, model: str) -> float:
    """A Prometheus counter of one model, summed over its other labels (version, reason)."""
    _, text = _get(server.metrics_url)
    values = [float(m.group(2)) for m in re.finditer(
        rf'^{name}{{([^}}]*)}} ([0-9.e+]+)$', text.decode(), re.MULTILINE)
        if f'model="{model}"' in m.group(1).split(",")]
    assert values, f"{name} for {model} not in the metrics"
    return sum(values)


# ----------------------------------------------------------------------------------------------
# against the real server
# ----------------------------------------------------------------------------------------------
def test_health_and_ready_endpoints(server):
    base = f"http://{server.http_url}"
    assert _get(f"{base}/v2/health/live")[0] == 200
    assert _get(f"{base}/v2/health/ready")[0] == 200
    for model in ("tiny", "pair", "tiny_batch", "tiny_hw"):
        assert _get(f"{base}/v2/models/{model}/ready")[0] == 200, model
    assert _get(f"{base}/v2/models/nothere/ready")[0] in (400, 404)
    assert server.startup_seconds is not None and server.startup_seconds < 60


def test_model_config_matches_the_bundle(server, bundles):
    base = f"http://{server.http_url}/v2/models"
    for model, key, batch in (("tiny", "static", 0), ("pair", "mixed", 0),
                              ("tiny_batch", "batch", MAX_BATCH), ("tiny_hw", "hw", 0)):
        status, body = _get(f"{base}/{model}/config")
        assert status == 200, body
        config = json.loads(body)
        manifest = read_bundle(bundles[key]).manifest
        assert config["backend"] == "python" and config["max_batch_size"] == batch
        for side in ("input", "output"):
            got = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[side]]
            want = [(t["name"], "TYPE_FP32", list(t["shape"][1:] if batch else t["shape"]))
                    for t in manifest[f"{side}s"]]
            assert got == want, (model, side)
        assert [g["kind"] for g in config["instance_group"]] == ["KIND_CPU"]
        assert ("dynamic_batching" in config) == bool(batch)
    dims = json.loads(_get(f"{base}/tiny_hw/config")[1])["input"][0]["dims"]
    assert [int(d) for d in dims] == [1, 3, -1, -1]


def test_http_and_grpc_outputs_equal_the_runtime(server, bundles):
    x = _rand((1, 3, 16, 16), seed=1)
    want = _reference(bundles["static"], data=x)
    for infer in (_http_infer, _grpc_infer):
        result = infer(server, "tiny", {"data": x})
        for name, value in want.items():
            assert np.array_equal(result.as_numpy(name), value), (infer.__name__, name)


def test_mixed_bundle_with_a_residual_mxnet_stage(server, bundles):
    assert read_bundle(bundles["mixed"]).manifest["requires"]["mxnet"]
    feeds = {"a": _rand((1, 3, 8, 8), seed=2), "b": _rand((1, 3, 8, 8), seed=3)}
    want = _reference(bundles["mixed"], **feeds)
    for infer in (_grpc_infer, _http_infer):
        result = infer(server, "pair", feeds)
        for name, value in want.items():
            assert np.array_equal(result.as_numpy(name), value), (infer.__name__, name)


def test_kserve_v2_json_over_plain_http(server, bundles):
    x = _rand((1, 3, 16, 16), seed=4)
    body = json.dumps({"inputs": [{"name": "data", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/tiny/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = json.loads(reply.read())
    want = _reference(bundles["static"], data=x)
    for output in answer["outputs"]:
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        assert np.array_equal(got, want[output["name"]])


def test_batch_sizes_in_range_over_both_protocols(server, bundles):
    for batch, infer in ((1, _http_infer), (5, _grpc_infer), (MAX_BATCH, _http_infer)):
        x = _rand((batch, 3, 16, 16), seed=batch)
        want = _reference(bundles["batch"], data=x)
        result = infer(server, "tiny_batch", {"data": x})
        for name, value in want.items():
            assert np.array_equal(result.as_numpy(name), value), batch


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, bundles):
    from tritonclient.utils import InferenceServerException

    bad = [  # (model, feeds, what the error must say)
        ("tiny_batch", {"data": _rand((MAX_BATCH + 1, 3, 16, 16))}, "batch"),  # over max batch
        ("tiny", {"data": np.zeros((1, 3, 16, 16), np.float64)}, "FP64"),  # wrong dtype
        ("tiny", {"data": _rand((2, 3, 16, 16))}, "shape"),  # wrong shape
        ("tiny_batch", {"data": _rand((2, 3, 15, 16))}, "shape"),
        ("pair", {"a": _rand((1, 3, 8, 8))}, "b"),  # an input missing
        # Triton passes these (dims -1); trtc's own range check answers with an error response
        ("tiny_hw", {"data": _rand((1, 3, 20, 16))}, "outside this bundle's range 8..16"),
    ]
    for model, feeds, says in bad:
        for infer in (_http_infer, _grpc_infer):
            with pytest.raises(InferenceServerException, match=re.escape(says)):
                infer(server, model, feeds)
    assert _get(f"http://{server.http_url}/v2/health/ready")[0] == 200
    assert server.process.poll() is None
    x = _rand((1, 3, 12, 9), seed=5)  # inside tiny_hw's range: served
    want = _reference(bundles["hw"], data=x)
    result = _grpc_infer(server, "tiny_hw", {"data": x})
    for name, value in want.items():
        assert np.array_equal(result.as_numpy(name), value)


def test_concurrent_requests_are_batched(server, bundles):
    import tritonclient.http as http

    def stats() -> Tuple[int, int]:
        _, body = _get(f"http://{server.http_url}/v2/models/tiny_batch/stats")
        model = json.loads(body)["model_stats"][0]
        return int(model["inference_count"]), int(model["execution_count"])

    before = stats()
    exec_before = _metric(server, "nv_inference_exec_count", "tiny_batch")
    sizes = [1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 2]
    xs = [_rand((n, 3, 16, 16), seed=100 + i) for i, n in enumerate(sizes)]
    client = http.InferenceServerClient(server.http_url, concurrency=len(xs))
    try:
        pending = []
        for x in xs:
            item = http.InferInput("data", list(x.shape), "FP32")
            item.set_data_from_numpy(x)
            pending.append(client.async_infer("tiny_batch", [item]))
        results = [p.get_result() for p in pending]
    finally:
        client.close()
    model = load(bundles["batch"], device="cpu")
    for x, result in zip(xs, results):
        for name, value in model(data=x).items():
            # served inside a larger batch: ONNX Runtime may sum in another order
            np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-6)
    inferences, executions = (a - b for a, b in zip(stats(), before))
    assert inferences == sum(sizes)
    assert executions < len(xs), f"{len(xs)} requests ran in {executions} executions: no batching"
    assert _metric(server, "nv_inference_exec_count", "tiny_batch") - exec_before == executions


def test_metrics_count_requests(server):
    from tritonclient.utils import InferenceServerException

    def requests(model: str) -> float:
        return (_metric(server, "nv_inference_request_success", model)
                + _metric(server, "nv_inference_request_failure", model))

    before = _metric(server, "nv_inference_request_success", "tiny")
    hw_before = requests("tiny_hw")
    for seed in range(3):
        _http_infer(server, "tiny", {"data": _rand((1, 3, 16, 16), seed=seed)})
    with pytest.raises(InferenceServerException, match="outside this bundle's range"):
        _http_infer(server, "tiny_hw", {"data": _rand((1, 3, 4, 4))})
    assert _metric(server, "nv_inference_request_success", "tiny") - before == 3
    # Triton 2.51's Python backend reports a request answered with an error response under
    # nv_inference_request_success (execute() itself succeeded): count both
    assert requests("tiny_hw") - hw_before == 1


# ----------------------------------------------------------------------------------------------
# trtc serve, end to end
# ----------------------------------------------------------------------------------------------
def _children(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_trtc_serve_serves_until_sigterm_and_cleans_up(server_binary, bundles, tmp_path):
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "trtc.cli", "serve", str(bundles["batch"]), "--name", "r",
           "--device", "cpu", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--metrics-port", str(metrics_port), "--tritonserver", str(server_binary.path),
           "--log-file", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_pids: List[int] = []
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready in"):
                break
        assert lines and lines[-1].startswith("ready in"), "".join(lines) + proc.stderr.read()
        text = "".join(lines)
        assert f"http://127.0.0.1:{http_port}" in text and f"127.0.0.1:{grpc_port}" in text
        assert f"http://127.0.0.1:{metrics_port}/metrics" in text
        server_pids = _children(proc.pid)
        assert server_pids, "no tritonserver child process"
        scratch = re.search(r"--model-repository=(\S+)/models",
                            Path(f"/proc/{server_pids[0]}/cmdline").read_bytes()
                            .replace(b"\0", b" ").decode()).group(1)
        x = _rand((2, 3, 16, 16), seed=9)
        result = _grpc_infer(f"127.0.0.1:{grpc_port}", "r", {"data": x})
        for name, value in _reference(bundles["batch"], data=x).items():
            assert np.array_equal(result.as_numpy(name), value)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()
        assert "[trtc] stopped" in proc.stderr.read()
        assert not any(_alive(pid) for pid in server_pids), "tritonserver outlived trtc serve"
        assert not Path(scratch).exists(), "the temporary repository was left behind"
        assert "Started HTTPService" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in server_pids:  # only if the test failed with the server still up
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_trtc_serve_on_a_busy_port_is_one_line(server_binary, bundles):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        grpc_port, metrics_port = _free_ports(2)
        run = subprocess.run([sys.executable, "-m", "trtc.cli", "serve", str(bundles["static"]),
                              "--http-port", str(port), "--grpc-port", str(grpc_port),
                              "--metrics-port", str(metrics_port), "--tritonserver",
                              str(server_binary.path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--http-port {port} on 127.0.0.1 is not free" in errors[0]


def test_a_model_that_fails_to_load_is_one_line(server_binary, bundles, tmp_path):
    repo = tmp_path / "repo"
    triton.write_repository([bundles["static"]], repo, names=["broken"], device="cpu")
    (repo / "broken" / "1" / "model.trtb").write_bytes(b"not a bundle")
    with pytest.raises(triton.TritonServerError) as caught:
        with _server(repo, binary=server_binary, startup_timeout=60):
            pass
    message = str(caught.value)
    assert "\n" not in message and "At:" not in message, message
    assert message.startswith("tritonserver exited with code 1 before it was ready: failed to "
                              "load 'broken' version 1: "), message
    assert "BundleError" in message and "not a trtc bundle" in message, message


# ----------------------------------------------------------------------------------------------
# the repository as files (no server)
# ----------------------------------------------------------------------------------------------
def test_batch_range_and_config_rules(bundles):
    assert triton.batch_range(read_bundle(bundles["batch"]).manifest) == (1, MAX_BATCH)
    for key in ("static", "mixed", "hw"):
        assert triton.batch_range(read_bundle(bundles[key]).manifest) is None, key
    manifest = read_bundle(bundles["batch"]).manifest
    text = triton.model_config(manifest, "m", instances=2, device="cuda", max_batch_size=4,
                               max_queue_delay_us=2000)
    assert "max_batch_size: 4" in text and "dims: [ 3, 16, 16 ]" in text
    assert "max_queue_delay_microseconds: 2000" in text
    assert "count: 2\n    kind: KIND_GPU" in text
    off = triton.model_config(manifest, "m", max_batch_size=0)
    assert "max_batch_size: 0" in off and "dims: [ -1, 3, 16, 16 ]" in off
    assert "dynamic_batching" not in off and "kind:" not in off  # --device auto: KIND_AUTO
    with pytest.raises(UsageError, match=r"--max-batch-size 9 is outside 0\.\.8"):
        triton.model_config(manifest, "m", max_batch_size=9)
    with pytest.raises(UsageError, match="needs a bundle whose first axis is a dynamic batch"):
        triton.model_config(read_bundle(bundles["static"]).manifest, "m", max_batch_size=2)


def test_gpus_place_instances_on_those_gpus(bundles, tmp_path):
    """Issue 23: --gpus 0,1,2,3 --instances 2 writes KIND_GPU with gpus: [...] (2 per GPU); the
    model file loads on the GPU Triton assigns each instance (model_instance_device_id)."""
    from typer.testing import CliRunner

    from trtc.cli import app

    manifest = read_bundle(bundles["batch"]).manifest
    text = triton.model_config(manifest, "m", instances=2, gpus=[0, 1, 2, 3])
    assert "count: 2\n    kind: KIND_GPU\n    gpus: [ 0, 1, 2, 3 ]" in text
    result = CliRunner().invoke(app, ["triton-repo", str(bundles["batch"]), "-o",
                                      str(tmp_path / "repo"), "--gpus", "0,1", "--instances", "2"])
    assert result.exit_code == 0, result.output
    config = next((tmp_path / "repo").glob("*/config.pbtxt")).read_text()
    assert "kind: KIND_GPU\n    gpus: [ 0, 1 ]" in config
    model_py = next((tmp_path / "repo").glob("*/1/model.py")).read_text()
    assert 'device = f"cuda:{int(args.get(\'model_instance_device_id\', \'0\'))}"' in model_py
    for bad, why in (("0,x", "GPU indices separated by commas"), ("0,0", "each once")):
        result = CliRunner().invoke(app, ["triton-repo", str(bundles["batch"]), "-o",
                                          str(tmp_path / "bad"), "--gpus", bad])
        assert result.exit_code == 2 and why in result.output, result.output
    result = CliRunner().invoke(app, ["triton-repo", str(bundles["batch"]), "-o",
                                      str(tmp_path / "bad"), "--gpus", "0", "--device", "cpu"])
    assert result.exit_code == 2 and "does not go with --device cpu" in result.output
    assert not (tmp_path / "bad").exists()


def test_triton_repo_cli_replaces_only_the_models_it_names(bundles, tmp_path):
    from typer.testing import CliRunner

    from trtc.cli import app

    repo = tmp_path / "repo"
    (repo / "other" / "1").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text('name: "other"\n')
    (repo / "tiny" / "2").mkdir(parents=True)  # a stale version of the model we will write
    runner = CliRunner()
    result = runner.invoke(app, ["triton-repo", str(bundles["static"]), str(bundles["batch"]),
                                 "-o", str(repo), "--name", "tiny", "--name", "tb",
                                 "--instances", "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert [(m["name"], m["max_batch_size"]) for m in written] == [("tiny", 0), ("tb", MAX_BATCH)]
    assert (repo / "other" / "config.pbtxt").read_text() == 'name: "other"\n'
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == ["1", "config.pbtxt"]
    assert sorted(p.name for p in (repo / "tiny" / "1").iterdir()) == ["model.py", "model.trtb"]
    assert (repo / "tiny" / "1" / "model.trtb").read_bytes() == bundles["static"].read_bytes()
    assert (repo / "tiny" / "1" / "model.py").read_bytes() == \
        (Path(triton.__file__).with_name("_triton_model.py")).read_bytes()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]
    # errors leave the repository as it was, as one line and exit 2
    before = sorted(str(p) for p in repo.rglob("*"))
    for args, says in (
        ([str(bundles["static"]), "--max-batch-size", "4"], "dynamic batch"),
        ([str(bundles["static"]), str(bundles["batch"]), "--name", "x"], "--name given 1 times"),
        ([str(bundles["static"]), "--name", "../x"], "model name '../x'"),
        ([str(bundles["static"]), "--native"], "built by tensorrt_rtx"),
        ([str(bundles["static"]), "--device", "tpu"], "--device must be one of"),
    ):
        result = runner.invoke(app, ["triton-repo", *args, "-o", str(repo)])
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output, (args, result.output)
    assert sorted(str(p) for p in repo.rglob("*")) == before


def test_native_tensorrt_plan_model_as_text(bundles, tmp_path):
    """A bundle of one full-TensorRT engine also becomes a tensorrt_plan model. Full TensorRT
    cannot build or run here, so a TensorRT-RTX bundle is relabelled and the files are checked."""
    from bundle_surgery import manifest_of, members_of, repack

    members = members_of(bundles["batch"])
    manifest = manifest_of(members)
    (stage,) = manifest["stages"]
    stage["backend"], stage["backend_version"] = "tensorrt", "10.8.0.43"
    relabelled = tmp_path / "trt.trtb"
    relabelled.write_bytes(repack(members, manifest))
    models = triton.write_repository([relabelled], tmp_path / "repo", names=["m"], native=True,
                                     max_queue_delay_us=100)
    assert [(m.name, m.kind) for m in models] == [("m", "python"), ("m_plan", "tensorrt_plan")]
    text = (tmp_path / "repo" / "m_plan" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and f"max_batch_size: {MAX_BATCH}" in text
    assert 'name: "data"' in text and "dims: [ 3, 16, 16 ]" in text
    assert 'profile: [ "0" ]' in text and "kind: KIND_GPU" in text
    assert "TensorRT 10.8.0.43" in text
    plan = dict(members)[stage["engine"]]
    assert (tmp_path / "repo" / "m_plan" / "1" / "model.plan").read_bytes() == plan


def test_no_server_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(triton.shutil, "which", lambda name: None)
    monkeypatch.setattr(triton, "_wheel_dir", lambda: None)
    with pytest.raises(IncompatibleError, match=r"pip install 'trtc\[serve\]'"):
        triton.find_tritonserver()
    with pytest.raises(UsageError, match="not an executable file"):
        triton.find_tritonserver("/nonexistent/tritonserver")


def test_request_packing():
    from trtc._triton_model import plan_batches

    assert plan_batches([1, 2, 3, 1, 1], 4) == [[0, 1], [2, 3], [4]]
    assert plan_batches([5, 1], 4) == [[0], [1]]
    assert plan_batches([], 4) == []
