"""Residual (MXNet) stages of a hand-crafted bundle: nothing reaches MXNet that does not fit what
its symbol needs. Every edit here comes with the checksums recomputed (what anyone can do to a
bundle without a signing key), so only the runtime's own checks stand between the bytes and MXNet.

Before these checks, a residual param of another shape made MXNet's kernels read out of bounds
(NaN outputs, a different output on every run, `malloc(): unsorted double linked list corrupted`,
segfaults); such bundles are loaded in a child process so a regression fails one test, not the
suite. Also: the symbol rebuild is linear (a 20,000-node symbol took 155 s to be refused), the
params reader bounded (an .npz with 50,000 members took 89 s), and MXNet prints nothing on stdout.
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack
from models import tiny
from trtc.runtime import BundleError, load
from trtc.runtime.bundle import MAX_RESIDUAL_PARAMS, MAX_SYMBOL_NODES

ROOT = Path(__file__).resolve().parents[2]
PARAMS = "residual/params.npz"
SYMBOL = "residual/residual0-symbol.json"
GAMMA, VAR = "arg:pair_batchnorm0_gamma", "aux:pair_batchnorm0_running_var"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two engines around a residual BatchNorm stage with four params."""
    return tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))


def _params(path: Path) -> Dict[str, np.ndarray]:
    with np.load(io.BytesIO(dict(members_of(path))[PARAMS])) as npz:
        return {key: npz[key] for key in npz.files}


def _replace(path: Path, name: str, body: bytes,
             edit: Callable[[Dict[str, Any]], None] = lambda m: None) -> bytes:
    """``path``'s bundle with member ``name`` replaced and the checksums recomputed."""
    members = [(n, body if n == name else d) for n, d in members_of(path)]
    manifest = copy.deepcopy(manifest_of(members))
    edit(manifest)
    return repack(members, manifest, fix_checksums=True)


def _with_params(path: Path, edit: Callable[[Dict[str, np.ndarray]], None]) -> bytes:
    params = _params(path)
    edit(params)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    return _replace(path, PARAMS, buffer.getvalue())


_LOAD_EACH = """
import json, sys
import numpy as np
from trtc.runtime import TrtcError, load
feeds = {n: np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
         for n in ("a", "b")}
for path in sys.argv[1:]:
    try:
        out = load(path, device="cpu")(**feeds)
        print(json.dumps({"loaded": {k: v.tolist() for k, v in out.items()}}), flush=True)
    except TrtcError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
"""


def _load_isolated(paths: List[Path]) -> List[Dict[str, Any]]:
    """Load and call each bundle in one child process; a crash there fails the test here."""
    done = subprocess.run([sys.executable, "-c", _LOAD_EACH, *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"the child crashed (exit {done.returncode}) loading "
                                  f"{paths}: {done.stderr[-2000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(paths), done.stdout[-2000:]
    return results


PARAM_EDITS = {
    "gamma shorter": (lambda p: p.update({GAMMA: p[GAMMA][:2]}), "float32 (2,)"),
    "running_var shorter": (lambda p: p.update({VAR: p[VAR][:1]}), "float32 (1,)"),
    "running_var longer": (lambda p: p.update({VAR: np.ones(64, "float32")}), "(64,)"),
    "gamma 2-d": (lambda p: p.update({GAMMA: p[GAMMA].reshape(2, 4)}), "(2, 4)"),
    "gamma empty": (lambda p: p.update({GAMMA: p[GAMMA][:0]}), "(0,)"),
    "gamma float16": (lambda p: p.update({GAMMA: p[GAMMA].astype("float16")}), "float16 (8,)"),
    "gamma float64": (lambda p: p.update({GAMMA: p[GAMMA].astype("float64")}), "float64 (8,)"),
    "running_var int8": (lambda p: p.update({VAR: p[VAR].astype("int8")}), "int8 (8,)"),
}


def test_params_of_the_wrong_shape_or_dtype_never_reach_mxnet(tmp_path: Path,
                                                              mixed: Path) -> None:
    paths = []
    for i, (edit, _) in enumerate(PARAM_EDITS.values()):
        paths.append(tmp_path / f"case{i}.trtb")
        paths[-1].write_bytes(_with_params(mixed, edit))
    for (case, (_, expected)), result in zip(PARAM_EDITS.items(), _load_isolated(paths)):
        assert result.get("error") == "BundleError", (case, result)
        text = result["message"]
        assert "\n" not in text and "stage 'residual0': param '" in text, (case, text)
        assert expected in text and "its symbol needs" in text, (case, text)


def test_the_params_must_be_exactly_those_the_stages_name(tmp_path: Path, mixed: Path) -> None:
    def drop(params: Dict[str, np.ndarray]) -> None:
        del params[VAR]

    def extra(params: Dict[str, np.ndarray]) -> None:
        params["arg:stowaway"] = np.zeros(3, "float32")

    path = tmp_path / "b.trtb"
    path.write_bytes(_with_params(mixed, drop))
    with pytest.raises(BundleError, match=f"param '{VAR}' is missing"):
        load(path, device="cpu")
    path.write_bytes(_with_params(mixed, extra))
    with pytest.raises(BundleError, match="'arg:stowaway', which no residual stage uses"):
        load(path, device="cpu")


def _edit_stage(edit: Callable[[Dict[str, Any]], None]) -> Callable[[Dict[str, Any]], None]:
    def apply(manifest: Dict[str, Any]) -> None:
        edit(next(s for s in manifest["stages"] if s["kind"] == "residual"))
    return apply


@pytest.mark.parametrize("case, edit, expected", [
    ("param named no variable", lambda s: s["params"].__setitem__(0, "arg:pair_nothing"),
     "its symbol's argument 'pair_batchnorm0_gamma' is given by no 'arg:' param"),
    ("aux named as arg", lambda s: s["params"].__setitem__(3, "arg:pair_batchnorm0_running_var"),
     "auxiliary state 'pair_batchnorm0_running_var' is given by no 'aux:' param"),
])
def test_every_symbol_variable_is_an_input_or_a_param_of_its_kind(
        tmp_path: Path, mixed: Path, case: str, edit: Callable, expected: str) -> None:
    params = _params(mixed)
    stage = copy.deepcopy(next(s for s in manifest_of(members_of(mixed))["stages"]
                               if s["kind"] == "residual"))
    edit(stage)
    for old in list(params):  # the params file holds what the edited stage names
        if old not in stage["params"]:
            params[next(k for k in stage["params"] if k not in params)] = params.pop(old)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    path = tmp_path / "v.trtb"
    path.write_bytes(_replace(mixed, PARAMS, buffer.getvalue(), _edit_stage(edit)))
    with pytest.raises(BundleError) as info:
        load(path, device="cpu")
    assert expected in str(info.value), (case, str(info.value))


def _register_pass_through() -> None:
    """A CustomOp taking a weight whose shape its ``infer_shape`` does not derive."""
    import mxnet as mx

    class PassThrough(mx.operator.CustomOp):
        def forward(self, is_train, req, in_data, out_data, aux):  # type: ignore[no-untyped-def]
            self.assign(out_data[0], req[0], in_data[0] * float(in_data[1].sum().asscalar()))

    @mx.operator.register("trtc_test_pass_through")
    class PassThroughProp(mx.operator.CustomOpProp):
        def list_arguments(self):  # type: ignore[no-untyped-def]
            return ["data", "weight"]

        def infer_shape(self, in_shape):  # type: ignore[no-untyped-def]
            return in_shape, [in_shape[0]], []

        def create_operator(self, ctx, shapes, dtypes):  # type: ignore[no-untyped-def]
            return PassThrough()


def test_a_param_only_a_custom_op_reads_is_checked_by_its_own_shape(tmp_path: Path,
                                                                    mixed: Path) -> None:
    """No op derives this weight's shape from the stage's inputs (a CustomOp that passes shapes
    through): it is bound as given, and the stage runs; Python code reads it by its own shape."""
    _register_pass_through()
    doc = {"nodes": [{"op": "null", "name": "pair_relu1_output", "inputs": []},
                     {"op": "null", "name": "w", "inputs": []},
                     {"op": "Custom", "name": "pass", "inputs": [[0, 0, 0], [1, 0, 0]],
                      "attrs": {"op_type": "trtc_test_pass_through"}}],
           "heads": [[2, 0, 0]]}
    buffer = io.BytesIO()
    np.savez(buffer, **{"arg:w": np.full(5, 0.2, np.float32)})
    members = [(n, json.dumps(doc).encode() if n == SYMBOL else
                buffer.getvalue() if n == PARAMS else d) for n, d in members_of(mixed)]
    manifest = copy.deepcopy(manifest_of(members))
    next(s for s in manifest["stages"] if s["kind"] == "residual")["params"] = ["arg:w"]
    path = tmp_path / "custom.trtb"
    path.write_bytes(repack(members, manifest, fix_checksums=True))
    model = load(path, device="cpu")
    assert all(np.isfinite(v).all() for v in model(**tiny.random_feeds("pair")).values())


def test_tensors_fed_to_mxnet_must_be_what_it_was_bound_for(mixed: Path) -> None:
    """A tensor of another dtype or shape is refused, not cast or broadcast into the executor."""
    model = load(mixed, device="cpu")
    stage = next(s for s in model.stages if type(s).__name__ == "MXNetStage")
    (name,) = stage.inputs
    good = np.zeros((1, 8, 8, 8), np.float32)
    assert set(stage.run({name: good})) == set(stage.outputs)
    for bad in (good.astype(np.float64), good[:, :4], np.zeros((8, 8, 8), np.float32),
                good.tolist()):
        with pytest.raises(BundleError, match=f"stage 'residual0': input '{name}' is "):
            stage.run({name: bad})


def _chain(path: Path, nodes: int) -> bytes:
    """``path``'s residual symbol with ``nodes`` relu nodes after its BatchNorm (same shape)."""
    doc = json.loads(dict(members_of(path))[SYMBOL])
    last = len(doc["nodes"]) - 1
    for i in range(nodes):
        doc["nodes"].append({"op": "relu", "name": f"chain{i}", "inputs": [[last, 0, 0]]})
        last += 1
    doc["heads"] = [[last, 0, 0]]
    del doc["arg_nodes"], doc["node_row_ptr"]
    return json.dumps(doc).encode()


def test_a_20000_node_symbol_is_built_in_linear_time(tmp_path: Path, mixed: Path) -> None:
    path = tmp_path / "long.trtb"
    path.write_bytes(_replace(mixed, SYMBOL, _chain(mixed, 20_000)))
    start = time.perf_counter()
    model = load(path, device="cpu")  # took 155 s: every node walked the graph behind it
    seconds = time.perf_counter() - start
    assert seconds < 20, seconds
    outputs = model(**tiny.random_feeds("pair"))
    reference = load(mixed, device="cpu")(**tiny.random_feeds("pair"))
    assert outputs.keys() == reference.keys()  # relu(BatchNorm) instead of BatchNorm: it runs


def test_a_symbol_over_the_node_bound_is_refused_before_mxnet_builds_it(
        tmp_path: Path, mixed: Path) -> None:
    path = tmp_path / "huge.trtb"
    path.write_bytes(_replace(mixed, SYMBOL, _chain(mixed, MAX_SYMBOL_NODES)))
    start = time.perf_counter()
    with pytest.raises(BundleError, match=f"the bound of {MAX_SYMBOL_NODES} "
                                          r"\(MAX_SYMBOL_NODES\)"):
        load(path, device="cpu")
    assert time.perf_counter() - start < 10


def _npz(members: Dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buffer.getvalue()


def test_an_npz_with_50000_members_is_refused_quickly(tmp_path: Path, mixed: Path) -> None:
    one = io.BytesIO()
    np.save(one, np.zeros(1, np.float32))
    members = {f"arg:p{i}.npy": one.getvalue() for i in range(50_000)}
    path = tmp_path / "many.trtb"
    path.write_bytes(_replace(mixed, PARAMS, _npz(members)))
    start = time.perf_counter()
    with pytest.raises(BundleError, match=f"more than the bound of {MAX_RESIDUAL_PARAMS} "
                                          r"\(MAX_RESIDUAL_PARAMS\)"):
        load(path, device="cpu")  # took 89 s: numpy looks every name up in a list
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("case, header, expected", [
    ("huge shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483647,), }",
     "holds 32 bytes, its header says float32 (2147483647,)"),
    ("object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (8,), }",
     "has dtype |O"),
    ("big-endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (8,), }",
     "has dtype >f4"),
    ("fortran order", "{'descr': '<f4', 'fortran_order': True, 'shape': (8,), }",
     "malformed .npy header"),
    ("not a literal", "__import__('os').system('echo hi')", "ValueError"),
])
def test_npy_headers_are_checked_before_anything_is_allocated(
        tmp_path: Path, mixed: Path, case: str, header: str, expected: str) -> None:
    raw = header.encode("latin1")
    npy = b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + bytes(32)
    params = {f"{key}.npy": b"" for key in _params(mixed)}
    for key in _params(mixed):
        buffer = io.BytesIO()
        np.save(buffer, _params(mixed)[key])
        params[f"{key}.npy"] = npy if key == GAMMA else buffer.getvalue()
    path = tmp_path / "h.trtb"
    path.write_bytes(_replace(mixed, PARAMS, _npz(params)))
    with pytest.raises(BundleError) as info:
        load(path, device="cpu")
    assert "residual params are unreadable" in str(info.value) and expected in str(info.value)


def test_mxnet_prints_nothing_on_stdout_for_a_symbol_it_refuses(
        tmp_path: Path, mixed: Path, capfd: pytest.CaptureFixture) -> None:
    """MXNet's Symbol.infer_shape prints its arguments on stdout when it fails (breaking
    `trtc run --json`): the runtime never calls it."""
    doc = json.loads(dict(members_of(mixed))[SYMBOL])
    batchnorm = next(n for n in doc["nodes"] if n["op"] == "BatchNorm")
    batchnorm["attrs"]["axis"] = "7"
    path = tmp_path / "axis.trtb"
    path.write_bytes(_replace(mixed, SYMBOL, json.dumps(doc).encode()))
    capfd.readouterr()
    with pytest.raises(BundleError, match="MXNet refuses the shapes or dtypes of its inputs"):
        load(path, device="cpu")
    assert capfd.readouterr().out == ""


def test_an_op_that_cannot_infer_from_an_unknown_param_loads(tmp_path: Path) -> None:
    """BilinearResize2D(mode='like') reading a folded constant: MXNet's partial shape inference
    (stage inputs only) raises on the constant's unknown shape instead of leaving it unknown,
    and the load refused a correct bundle ("index = 2 must be in range [0, -1)"). The full
    inference with the params' own shapes now decides."""
    import mxnet as mx

    from trtc.api import compile as trtc_compile

    class LikeConstant(mx.gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.conv = mx.gluon.nn.Conv2D(4, 3, padding=1, in_channels=3)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            return F.contrib.BilinearResize2D(self.conv(x), F.zeros((1, 1, 7, 9)), mode="like")

    params = tiny.export_block(LikeConstant(), tmp_path, "like", (1, 3, 16, 16))
    bundle = tmp_path / "like.trtb"
    trtc_compile(params, output=bundle, residual="mxnet", inputs={"data": (1, 3, 16, 16)})
    model = load(bundle, device="cpu")
    assert "residual" in [stage["kind"] for stage in model.manifest["stages"]]
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    symbol = mx.sym.load(str(tmp_path / "like-symbol.json"))
    loaded = mx.nd.load(str(params))
    args = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    want = symbol.bind(mx.cpu(), {**args, "data": mx.nd.array(x)}).forward()[0].asnumpy()
    (got,) = model(data=x).values()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
