"""trtc.compile, the Python front door (issue 16): a Gluon HybridBlock, a Symbol + params or a
params path in one call; options are CompileSettings' fields; progress to a callback or the
``trtc`` logger, never stdout. Real MXNet blocks, tiny enough to compile in about a second."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
from typer.testing import CliRunner

import trtc
from trtc import CompileSettings
from trtc.runtime import UsageError
from trtc.runtime import load  # noqa: E402

mx = pytest.importorskip("mxnet")
from mxnet.gluon import nn  # noqa: E402

SHAPE = (1, 3, 16, 16)


def _net(batchnorm: bool = False) -> Any:
    """conv-relu-conv(-BatchNorm)-relu-conv, seeded; in_channels left to deferred init."""
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1), nn.Activation("relu"), nn.Conv2D(8, 3, padding=1))
    if batchnorm:
        net.add(nn.BatchNorm())
    net.add(nn.Activation("relu"), nn.Conv2D(4, 1))
    return net


@pytest.fixture
def net() -> Any:
    block = _net()
    block.initialize(mx.init.Xavier())
    block.hybridize()
    return block


@pytest.fixture
def x() -> Any:
    return mx.nd.array(np.random.default_rng(0).random(SHAPE, dtype=np.float32))


def _reference(block: Any, data: Any) -> np.ndarray:
    return block(mx.nd.array(data) if isinstance(data, np.ndarray) else data).asnumpy()


def _only(outputs: dict) -> Any:
    (value,) = outputs.values()
    return value


# ----------------------------------------------------------------------------------------------
# A HybridBlock in one call
# ----------------------------------------------------------------------------------------------
def test_block_fp32_in_one_call(net: Any, x: Any, tmp_path: Path) -> None:
    lines: List[str] = []
    result = trtc.compile(net, x, output=tmp_path / "t.trtb", progress=lines.append)
    assert result.output == tmp_path / "t.trtb" and result.output.is_file()
    assert result.bundle is None and result.report.full and all(c.ok for c in result.checks)
    assert result.manifest["inputs"] == [{"name": "data", "shape": list(SHAPE), "dtype": "float32"}]
    assert any(line.startswith("verifying") for line in lines) and "total" in result.timings
    model = load(result.output, device="cpu")
    np.testing.assert_allclose(_only(model(data=x)), _reference(net, x), rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["t.trtb"]


def test_block_with_a_dynamic_range(net: Any, tmp_path: Path) -> None:
    example = np.zeros((2,) + SHAPE[1:], np.float32)  # inside the range: the opt shape
    result = trtc.compile(net, example, inputs={"data": "1..4x3x16x16"}, output=str(tmp_path / "d.trtb"))
    (spec,) = result.manifest["inputs"]
    assert (spec["min_shape"], spec["opt_shape"], spec["max_shape"]) == (
        [1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16])
    model = load(result.output, device="cpu")
    for batch in (1, 3, 4):
        data = np.random.default_rng(batch).random((batch,) + SHAPE[1:], dtype=np.float32)
        np.testing.assert_allclose(_only(model(data=data)), _reference(net, data), rtol=1e-4, atol=1e-5)


def test_block_shapes_from_inputs_alone_with_tuples(net: Any, tmp_path: Path) -> None:
    result = trtc.compile(net, inputs={"data": ((1, 2), 3, 16, 16)}, fp16=True,
                          output=tmp_path / "h.trtb")
    assert result.manifest["precision"] == "fp16"
    assert result.manifest["inputs"][0]["max_shape"] == [2, 3, 16, 16]


def test_two_input_block_is_named_as_export_names_it(tmp_path: Path) -> None:
    class Pair(nn.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.conv_a = nn.Conv2D(4, 3, padding=1)
                self.conv_b = nn.Conv2D(4, 3, padding=1)

        def hybrid_forward(self, F: Any, a: Any, b: Any) -> Any:
            return F.relu(self.conv_a(a) + self.conv_b(b))

    block = Pair()
    block.initialize()
    block.hybridize()
    a, b = (mx.nd.array(np.random.default_rng(i).random(SHAPE, dtype=np.float32)) for i in (1, 2))
    result = trtc.compile(block, a, b, output=tmp_path / "p.trtb")
    model = load(result.output, device="cpu")
    assert list(model.inputs) == ["data0", "data1"]
    np.testing.assert_allclose(_only(model(data0=a, data1=b)), block(a, b).asnumpy(), rtol=1e-4, atol=1e-5)


def test_a_block_that_cannot_be_traced(x: Any) -> None:
    class ShapeDependent(nn.HybridBlock):
        def hybrid_forward(self, F: Any, data: Any) -> Any:
            return F.reshape(data, (data.shape[0], -1))

    block = ShapeDependent()
    block.initialize()
    block.hybridize()
    with pytest.raises(UsageError, match="cannot trace ShapeDependent as a symbolic graph"):
        trtc.compile(block, x)


def test_output_none_returns_the_bytes_and_leaves_nothing(net: Any, x: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the export goes
    lines: List[str] = []
    result = trtc.compile(net, x, progress=lines.append)
    assert result.output is None and result.bundle[:2] == b"PK"
    assert result.to_json()["bundle_bytes"] == len(result.bundle)
    assert f"bundle={len(result.bundle)} bytes" in repr(result) and len(repr(result)) < 300
    assert lines[-1].startswith("built the bundle in memory")
    assert os.listdir(tmp_path) == []  # the export and the bundle were temporary
    model = result.load(device="cpu")
    np.testing.assert_allclose(_only(model(data=x)), _reference(net, x), rtol=1e-4, atol=1e-5)


def test_dry_run(net: Any, x: Any) -> None:
    result = trtc.compile(net, x, dry_run=True, exclude_ops="Activation")
    assert result.output is None and result.bundle is None and result.manifest is None
    assert {d.reason for d in result.report.decisions} >= {"excluded"}
    with pytest.raises(UsageError, match="dry run"):
        result.load()


def test_non_float32_example_records_the_dtype(tmp_path: Path) -> None:
    class Embed(nn.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.embed = nn.Embedding(50, 8)
                self.dense = nn.Dense(4, flatten=False)

        def hybrid_forward(self, F: Any, ids: Any) -> Any:
            return self.dense(F.relu(self.embed(ids)))

    block = Embed()
    block.initialize()
    block.hybridize()
    ids = np.array([[1, 7, 49, 0]], dtype=np.int32)
    result = trtc.compile(block, ids, output=tmp_path / "e.trtb")
    assert result.manifest["inputs"][0]["dtype"] == "int32"
    model = load(result.output, device="cpu")
    np.testing.assert_allclose(_only(model(data=ids)), block(mx.nd.array(ids, dtype="int32")).asnumpy(),
                               rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# A Symbol with its params, and a params path
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def exported(tmp_path: Path, x: Any) -> Any:
    """A block with BatchNorm (aux params), exported by Gluon itself."""
    block = _net(batchnorm=True)
    block.initialize(mx.init.Xavier())
    block.hybridize()
    block(x)
    block.export(str(tmp_path / "m"), epoch=0)
    return block, tmp_path / "m-symbol.json", tmp_path / "m-0000.params"


@pytest.mark.parametrize("form", ["nd.load", "plain names", "(arg, aux)"])
def test_symbol_and_params(exported: Any, x: Any, tmp_path: Path, form: str) -> None:
    block, symbol_path, params_path = exported
    symbol = mx.sym.load(str(symbol_path))
    loaded = mx.nd.load(str(params_path))
    arg = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in loaded.items() if k.startswith("aux:")}
    params = {"nd.load": loaded, "plain names": {**arg, **{k: v.asnumpy() for k, v in aux.items()}},
              "(arg, aux)": (arg, aux)}[form]
    result = trtc.compile(symbol, params, x.asnumpy(), output=tmp_path / "s.trtb")
    model = load(result.output, device="cpu")
    np.testing.assert_allclose(_only(model(data=x)), _reference(block, x), rtol=1e-4, atol=1e-5)


def test_params_path(exported: Any, x: Any, tmp_path: Path) -> None:
    block, _, params_path = exported
    result = trtc.compile(str(params_path), inputs={"data": "1x3x16x16"}, output=tmp_path / "p.trtb")
    np.testing.assert_allclose(_only(load(result.output, device="cpu")(data=x)), _reference(block, x),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="example inputs apply to a block or symbol"):
        trtc.compile(params_path, x)


def test_report_is_what_the_cli_prints(net: Any, x: Any, tmp_path: Path) -> None:
    from trtc.cli import app

    result = trtc.compile(net, x, dry_run=True, exclude_ops=["Activation"])
    net.export(str(tmp_path / "n"), epoch=0)
    from trtc.zoo import record_input_shapes

    record_input_shapes(tmp_path / "n-symbol.json", {"data": SHAPE})
    cli = CliRunner().invoke(app, ["compile", str(tmp_path / "n-0000.params"), "--dry-run",
                                   "--exclude-op", "Activation", "-q"])
    assert cli.exit_code == 0, cli.output
    assert str(result.report) == result.report.to_text()
    assert cli.stderr.strip() == str(result.report).strip()
    assert "ops kept out of engines" in str(result.report)


def test_compile_settings_form_is_the_compiler_itself(exported: Any, tmp_path: Path) -> None:
    from trtc import compiler

    _, _, params_path = exported
    lines: List[str] = []
    settings = CompileSettings(params=params_path, inputs={"data": SHAPE}, dry_run=True)
    result = trtc.compile(settings, lines.append)  # progress positionally, as before
    assert type(result) is compiler.CompileResult and lines
    assert type(trtc.compile(settings)) is compiler.CompileResult
    with pytest.raises(UsageError, match="CompileSettings fields"):
        trtc.compile(settings, fp16=True)


# ----------------------------------------------------------------------------------------------
# Progress: a callback or the "trtc" logger, never stdout
# ----------------------------------------------------------------------------------------------
def test_progress_goes_to_logging_not_stdout(net: Any, x: Any, caplog: pytest.LogCaptureFixture,
                                             capfd: pytest.CaptureFixture) -> None:
    root = logging.getLogger()
    level = root.level
    with caplog.at_level(logging.INFO, logger="trtc"):
        trtc.compile(net, x, exclude_ops=("Activation",), min_segment_size=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "trtc"]
    assert any(m.startswith("loading") for m in messages)
    assert any(m.startswith("building engine") for m in messages)  # emitted mid-compile
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("MXNet ops run outside TensorRT engines" in m and "print(result.report)" in m
               for m in warnings)
    assert capfd.readouterr().out == ""
    assert root.level == level  # the export's logging changes do not leak out


# ----------------------------------------------------------------------------------------------
# Bad sources and options: one UsageError each, naming the fix
# ----------------------------------------------------------------------------------------------
def test_uninitialized_and_unhybridized_block(x: Any) -> None:
    block = _net()
    with pytest.raises(UsageError) as info:
        trtc.compile(block, x)
    text = str(info.value)
    assert "call net.initialize() (or net.load_parameters(FILE)) and net.hybridize()" in text
    block.initialize()
    with pytest.raises(UsageError, match=r"call net\.hybridize\(\) before trtc\.compile"):
        trtc.compile(block, x)


def test_plain_block_and_unknown_sources(x: Any) -> None:
    class Imperative(nn.Block):
        def forward(self, data: Any) -> Any:
            return data * 2

    with pytest.raises(UsageError, match="is a Block, which runs imperatively only"):
        trtc.compile(Imperative(), x)
    with pytest.raises(UsageError, match="cannot compile a builtins.int"):
        trtc.compile(3)


def test_unknown_option_lists_the_valid_ones(net: Any, x: Any) -> None:
    with pytest.raises(UsageError) as info:
        trtc.compile(net, x, fp61=True)
    text = str(info.value)
    assert "unknown option 'fp61' (did you mean 'fp16'?)" in text
    assert "exclude_ops" in text and "min_segment_size" in text
    with pytest.raises(UsageError, match="the source, the first argument"):
        trtc.compile(net, x, params="x.params")


@pytest.mark.parametrize("options,match", [
    ({"fp16": "yes"}, "fp16='yes': expected True or False"),
    ({"min_segment_size": 2.5}, "expected an integer"),
    ({"inputs": ["data"]}, "takes a dict input name"),
    ({"inputs": {"data": "1x3x16"}}, r"outside inputs=\{'data': '1x3x16'\}"),
    ({"inputs": {"data": "4..8x3x16x16"}}, "outside"),
    ({"inputs": {"data": (1, 0, 16, 16)}}, "is not a shape"),
    ({"inputs": {"x": "1x3x16x16"}}, "the block's inputs are named data"),
    ({"symbol": "m-symbol.json"}, "symbol= goes with a params file path"),
])
def test_bad_options(net: Any, x: Any, options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        trtc.compile(net, x, **options)


def test_wrong_example_inputs(net: Any, x: Any, exported: Any) -> None:
    with pytest.raises(UsageError, match="hybrid_forward takes 1 input\(s\), got 2 example"):
        trtc.compile(net, x, x)
    with pytest.raises(UsageError, match="expected an MXNet NDArray or a numpy array, got builtins.list"):
        trtc.compile(net, [[1.0]])
    with pytest.raises(UsageError, match="give the block's inputs"):
        trtc.compile(net)
    symbol = mx.sym.load(str(exported[1]))
    with pytest.raises(UsageError, match="params .* must follow the symbol"):
        trtc.compile(symbol)
    with pytest.raises(UsageError, match="must follow it: a dict"):
        trtc.compile(symbol, x)


def test_help_is_enough() -> None:
    doc = trtc.compile.__doc__
    for word in ("Args:", "Returns:", "Raises:", "HybridBlock", "Symbol", "params", "inputs",
                 "output=None", "progress", "logger"):
        assert word in doc, word


# ----------------------------------------------------------------------------------------------
# Hostile settings: one check of CompileSettings (compiler._check_settings) for the CLI and API
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,match", [
    ({"tolerance": "abc"}, r"CompileSettings.tolerance='abc': expected a positive number"),
    ({"tolerance": float("nan")}, "CompileSettings.tolerance=nan"),
    ({"min_segment_size": "3"}, r"CompileSettings.min_segment_size='3': expected an integer"),
    ({"min_segment_size": None}, "CompileSettings.min_segment_size=None: expected an integer"),
    ({"params": 123}, "CompileSettings.params=123: expected a file path"),
    ({"params": None}, "CompileSettings.params=None: expected a file path"),
    ({"output": 5}, "CompileSettings.output=5: expected a file path"),
    ({"fp16": "no"}, "CompileSettings.fp16='no': expected True or False"),
    ({"exclude_ops": "Convolution"}, "CompileSettings.exclude_ops='Convolution': expected a tuple of strings"),
    ({"backend": None}, "CompileSettings.backend=None: expected a string like 'auto'"),
    ({"compute_capabilities": "8.6"}, "CompileSettings.compute_capabilities='8.6'"),
    ({"compute_capabilities": ["sm86"]}, "--compute-capability 'sm86': expected MAJOR.MINOR"),
    ({"compute_capabilities": ["9.9"], "backend": "tensorrt_rtx"}, "--compute-capability 9.9: TensorRT-RTX"),
    ({"input_dtypes": {"data": "float128"}}, "'float128' for 'data' is not a dtype trtc takes"),
    ({"input_dtypes": {"data": 5}}, "5 for 'data' is not a dtype trtc takes"),
    ({"input_dtypes": {"data": np.complex64}}, "for 'data' is not a dtype trtc takes"),
    ({"inputs": {"data": ((8, 1), 3, 16, 16)}}, r"the range \(8, 1\) must be \(min, max\)"),
    ({"inputs": {"data": (1, 3, 2**40, 16)}}, "more than trtc verifies"),
    ({"inputs": {"data": "1x3x16x16"}}, "is not a shape"),
    ({"inputs": None}, "CompileSettings.inputs=None: expected a dict"),
    ({"opt_shapes": {"data": (0, 3, 16, 16)}, "inputs": {"data": ((1, 4), 3, 16, 16)}}, "is not a shape"),
])
def test_compile_settings_of_the_wrong_type(tmp_path: Path, fields: dict, match: str) -> None:
    """A CompileSettings goes to the compiler without the CLI's parsing: a wrong type was a
    TypeError (or an AttributeError from the builder, minutes later), now a UsageError naming
    the field, from the one check the CLI goes through too."""
    values = {"params": tmp_path / "m-0000.params", "output": tmp_path / "m.trtb", **fields}
    with pytest.raises(UsageError, match=match):
        trtc.compile(CompileSettings(**values))
    assert not (tmp_path / "m.trtb").exists()


def test_compile_settings_paths_may_be_str(exported: Any, tmp_path: Path) -> None:
    _, _, params_path = exported
    result = trtc.compile(CompileSettings(params=str(params_path), output=str(tmp_path / "m.trtb"),
                                          inputs={"data": list(SHAPE)}, exclude_ops=["Pooling"],
                                          dry_run=True))
    assert result.report.total_ops > 0


@pytest.mark.parametrize("options,match", [
    ({"input_dtypes": {"data": "float128"}}, "'float128' for 'data' is not a dtype trtc takes"),
    ({"input_dtypes": {"data": 5}}, "5 for 'data' is not a dtype"),
    ({"input_dtypes": {"data": object()}}, "for 'data' is not a dtype"),
    ({"inputs": {"data": (2**40, 3, 16, 16)}}, "more than trtc verifies"),
])
def test_bad_option_values(net: Any, options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        trtc.compile(net, **options)


def test_symbol_params_that_are_not_arrays(exported: Any) -> None:
    _, symbol_path, params_path = exported
    symbol = mx.sym.load(str(symbol_path))
    params = mx.nd.load(str(params_path))
    key = next(k for k in params if k.startswith("arg:"))
    with pytest.raises(UsageError, match=f"param '{key[4:]}' is a builtins.str"):
        trtc.compile(symbol, {**params, key: "abc"})
