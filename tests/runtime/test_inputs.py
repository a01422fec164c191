"""Run-time input rules (Model's docstring) on real bundles: every mistake is an InputError that
names the input, what was expected and what was given; float64/float16 become float32; integer and
bool arrays are refused for float inputs; NaN and Inf pass through unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from models import tiny
from trtc.runtime import InputError, Model, UsageError, load


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """One input: data 1x3x16x16 float32."""
    return load(tiny.bundle("tiny", tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """Two inputs: a and b, 1x3x8x8 float32."""
    return load(tiny.bundle("pair", tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return tiny.random_feeds("tiny")["data"]


def _refused(model: Model, **arrays: Any) -> str:
    with pytest.raises(InputError) as info:
        model(**arrays)
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, ValueError)
    return text


def _only(outputs: Dict[str, np.ndarray]) -> np.ndarray:
    (value,) = outputs.values()
    return value


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
def test_missing_input_is_named_with_its_shape(two: Model) -> None:
    text = _refused(two, a=tiny.random_feeds("pair")["a"])
    assert "missing input 'b'" in text and "(1, 3, 8, 8)" in text and "a, b" in text


def test_extra_input_is_named(two: Model) -> None:
    feeds = tiny.random_feeds("pair")
    text = _refused(two, **feeds, c=feeds["a"])
    assert "unknown input 'c'" in text and "inputs are: a, b" in text


def test_misspelled_input_gets_a_suggestion(one: Model, x: np.ndarray) -> None:
    text = _refused(one, dta=x)
    assert "unknown input 'dta'" in text and "did you mean 'data'" in text


def test_no_inputs(one: Model) -> None:
    assert "missing input 'data'" in _refused(one)


def test_inputs_must_be_named(one: Model, x: np.ndarray) -> None:
    with pytest.raises(InputError, match="inputs must be given by name"):
        one.run([x])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,what", [((1, 3, 16), "rank"), ((3, 16, 16), "rank"),
                                        ((1, 1, 3, 16, 16), "rank"), ((1, 3, 16, 15), "shape"),
                                        ((2, 3, 16, 16), "shape"), ((), "rank")])
def test_wrong_rank_or_shape(one: Model, shape: tuple, what: str) -> None:
    text = _refused(one, data=np.zeros(shape, np.float32))
    assert f"input 'data': wrong {what}" in text
    assert "expected shape (1, 3, 16, 16)" in text and f"got {shape}" in text


# ----------------------------------------------------------------------------------------------
# Dtypes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float16", ">f4", ">f8"])
def test_other_floats_are_converted_to_float32(one: Model, x: np.ndarray, dtype: str) -> None:
    given = x.astype(dtype)
    expected = _only(one(data=given.astype(np.float32)))
    np.testing.assert_array_equal(_only(one(data=given)), expected)
    assert given.dtype == np.dtype(dtype)  # the caller's array is not changed


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "bool", "complex64",
                                   "object", "U3", "datetime64[s]"])
def test_non_float_arrays_are_refused_for_a_float_input(one: Model, x: np.ndarray,
                                                        dtype: str) -> None:
    given = np.zeros(x.shape, dtype=dtype)
    text = _refused(one, data=given)
    assert f"input 'data': expected dtype float32, got {given.dtype}" in text
    assert "astype('float32')" in text


# ----------------------------------------------------------------------------------------------
# Array kinds and layouts
# ----------------------------------------------------------------------------------------------
def test_non_contiguous_arrays_are_refused(one: Model, x: np.ndarray) -> None:
    views = {
        "fortran": np.asfortranarray(x),
        "transposed": np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
        "strided": np.zeros((1, 3, 16, 32), np.float32)[..., ::2],
    }
    for kind, view in views.items():
        assert view.shape == x.shape
        text = _refused(one, data=view)
        assert "input 'data': expected a C-contiguous array" in text, kind
        assert "numpy.ascontiguousarray" in text


@pytest.mark.parametrize("value", [
    [[0.0]], (1.0, 2.0), 1.0, None, "data", b"\x00" * 3072, np.float32(1.0),
    np.ma.masked_array(np.zeros((1, 3, 16, 16), np.float32)),
], ids=["list", "tuple", "float", "None", "str", "bytes", "numpy-scalar", "masked"])
def test_non_numpy_arrays_are_refused(one: Model, value: Any) -> None:
    text = _refused(one, data=value)
    assert "input 'data': expected a numpy.ndarray of shape (1, 3, 16, 16) float32" in text
    assert f"got {type(value).__module__}.{type(value).__name__}" in text


# ----------------------------------------------------------------------------------------------
# MXNet NDArrays: accepted like numpy arrays (CPU path here; GPU NDArrays: test_gpu_dlpack.py)
# ----------------------------------------------------------------------------------------------
def test_mxnet_ndarrays_are_accepted_like_numpy(one: Model, x: np.ndarray) -> None:
    import mxnet as mx

    expected = _only(one(data=x))
    for given in (mx.nd.array(x), mx.np.array(x), mx.nd.array(x, dtype="float64"),
                  mx.nd.array(x, dtype="float16")):
        np.testing.assert_allclose(_only(one(data=given)), _only(one(data=given.asnumpy())))
    np.testing.assert_array_equal(_only(one(data=mx.nd.array(x))), expected)


def test_a_default_layout_cpu_ndarray_is_read_without_a_copy(one: Model, x: np.ndarray) -> None:
    import mxnet as mx

    from trtc.runtime.dlpack import is_device_array
    from trtc.runtime.model import _check_array

    given = mx.nd.array(x)
    assert not is_device_array(given)  # a CPU NDArray takes the host path, also on the GPU
    view = _check_array("data", given, one.inputs["data"])
    given[:] = 7.0  # written through MXNet: the view sees it, so it is the NDArray's memory
    given.wait_to_read()
    assert (view == 7.0).all() and not view.flags.writeable


def test_a_onednn_layout_ndarray_is_copied(one: Model, x: np.ndarray) -> None:
    """A convolution's output lives in oneDNN's layout, which DLPack cannot export: asnumpy()."""
    import mxnet as mx

    conv = mx.gluon.nn.Conv2D(3, 1, in_channels=3)
    conv.initialize()
    conv.hybridize()
    given = conv(mx.nd.array(x))
    np.testing.assert_array_equal(_only(one(data=given)), _only(one(data=given.asnumpy())))


def test_mxnet_ndarrays_follow_the_input_rules(one: Model, x: np.ndarray) -> None:
    import mxnet as mx

    assert "expected dtype float32, got int32" in _refused(one, data=mx.nd.array(x, dtype="int32"))
    assert "wrong shape" in _refused(one, data=mx.nd.zeros((2, 3, 16, 16)))
    sparse = mx.nd.zeros((1, 48)).tostype("csr")
    assert "sparse MXNet NDArray (csr); pass x.tostype('default')" in _refused(one, data=sparse)


def test_output_mxnet_returns_ndarrays(one: Model, two: Model, x: np.ndarray,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    import mxnet as mx

    out = one(data=mx.nd.array(x), output="mxnet")
    assert isinstance(_only(out), mx.nd.NDArray) and _only(out).context == mx.cpu()
    np.testing.assert_array_equal(_only(out).asnumpy(), _only(one(data=x)))
    residual = load(tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",)), device="cpu")
    feeds = tiny.random_feeds("pair")
    out = residual.run({n: mx.nd.array(v) for n, v in feeds.items()}, output="mxnet")
    np.testing.assert_array_equal(_only(out).asnumpy(), _only(residual(**feeds)))
    with pytest.raises(UsageError, match="'numpy', 'device' or 'mxnet', not 'torch'"):
        one(data=x, output="torch")


def test_read_only_arrays_are_fine_and_inputs_are_not_written(one: Model, x: np.ndarray) -> None:
    given = x.copy()
    given.setflags(write=False)
    expected = _only(one(data=x))
    np.testing.assert_array_equal(_only(one(data=given)), expected)
    np.testing.assert_array_equal(given, x)


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------
def test_nan_passes_through_to_nan_outputs(one: Model, x: np.ndarray) -> None:
    given = x.copy()
    given[0, 0, 5, 5] = np.nan
    out = _only(one(data=given))
    assert np.isnan(out).any()
    assert np.isnan(out[0, :, 5, 5]).all()  # the pixel itself, through three convolutions
    assert np.isfinite(out[0, :, 15, 15]).all()  # far away: untouched


def test_nan_through_a_residual_mxnet_stage(tmp_path_factory: pytest.TempPathFactory) -> None:
    model = load(tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",)), device="cpu")
    feeds = tiny.random_feeds("pair")
    feeds["a"][:] = np.nan
    assert np.isnan(_only(model(**feeds))).all()


def test_inf_passes_through(one: Model, x: np.ndarray) -> None:
    given = x.copy()
    given[0, 1, 2, 2] = np.inf
    out = _only(one(data=given))  # no exception; inf turns into inf or nan downstream
    assert not np.isfinite(out[0, :, 2, 2]).all()
    assert np.isfinite(out[0, :, 15, 15]).all()


def test_float64_beyond_float32_range_becomes_inf(one: Model, x: np.ndarray) -> None:
    given = x.astype(np.float64)
    given[0, 0, 0, 0] = 1e300
    out = _only(one(data=given))
    assert not np.isfinite(out[0, :, 0, 0]).all()


@pytest.mark.filterwarnings("ignore:Cannot decide type")
def test_good_inputs_give_the_reference_outputs(two: Model, tmp_path_factory: Any) -> None:
    """The same arrays through the compile-time reference (MXNet) and the bundle agree."""
    import mxnet as mx

    params = tiny.export("pair", Path(tmp_path_factory.mktemp("pair-ref")))
    prefix = str(params).replace("-0000.params", "")
    net = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["a", "b"], str(params))
    feeds = tiny.random_feeds("pair", seed=3)
    reference = net(mx.nd.array(feeds["a"]), mx.nd.array(feeds["b"])).asnumpy()
    np.testing.assert_allclose(_only(two(**feeds)), reference, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def ids_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """families' ops_block: ``ids`` 1x16 int32 into an Embedding of 100 rows, ``x`` 1x16x32."""
    pytest.importorskip("mxnet")
    from models import families
    from trtc import CompileSettings, compile

    directory = Path(tmp_path_factory.mktemp("ids"))
    params = families.export_ops_block(directory)
    result = compile(CompileSettings(params=params, output=directory / "ops.trtb",
                                     verify_inputs=None))
    return load(result.output, device="cpu")


@pytest.mark.parametrize("bad", [-1, -100, 100, 2 ** 31 - 1])
def test_ids_outside_the_table_are_refused(ids_model: Model, bad: int) -> None:
    """Issue 21: a negative id gave row vocab-1 (ONNX Runtime's negative indexing) where MXNet
    clips to row 0; ids >= the vocabulary failed deep in ONNX Runtime. Both are one InputError
    naming the input, the range and the table, before any stage runs."""
    spec = ids_model.inputs["ids"]
    assert spec.index_range == (0, 100) and spec.indexes
    feeds = {"ids": np.arange(16, dtype=np.int32).reshape(1, 16),
             "x": np.zeros((1, 16, 32), np.float32)}
    ids_model(**feeds)  # in range: fine
    feeds["ids"][0, 3] = bad
    text = _refused(ids_model, **feeds)
    assert "input 'ids': ids must lie in [0, 100)" in text and spec.indexes in text, text
    assert repr(np.int32(bad)) in text or str(bad) in text


def test_call_mistakes_are_one_line_trtc_errors(one: Model, x: np.ndarray) -> None:
    """Issue 21: model(x) raised Python's bare TypeError, model(output=array) a 98-line error."""
    with pytest.raises(InputError) as info:
        one(x)
    assert "inputs are given by name: model(data=...)" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError) as info2:
        one(output=x)
    assert "output must be 'numpy', 'device' or 'mxnet', not a ndarray" in str(info2.value)
    assert "\n" not in str(info2.value)


def test_dynamic_axes_that_must_agree_are_checked_together(tmp_path_factory: Any) -> None:
    """Issue 21: pair's inputs a and b (batch 1..4) are added elementwise, so MXNet refuses
    different batches; the bundle used to run them anyway. The compiler asks MXNet which dynamic
    axes are tied (manifest dim_groups) and the runtime refuses a call that breaks one."""
    pytest.importorskip("mxnet")
    from trtc import CompileSettings, compile

    directory = Path(tmp_path_factory.mktemp("dims"))
    params = tiny.export("pair", directory)
    result = compile(CompileSettings(params=params, output=directory / "pair-dyn.trtb",
                                     inputs={"a": ((1, 4), 3, 8, 8), "b": ((1, 4), 3, 8, 8)}))
    assert result.manifest["dim_groups"] == [[["a", 0], ["b", 0]]]
    model = load(result.output, device="cpu")
    rng = np.random.default_rng(0)
    same = {"a": rng.random((3, 3, 8, 8), np.float32), "b": rng.random((3, 3, 8, 8), np.float32)}
    assert model(**same)[next(iter(model.outputs))].shape[0] == 3
    text = _refused(model, a=same["a"], b=same["b"][:2])
    assert "inputs disagree: a axis 0 is 3, b axis 0 is 2" in text, text
