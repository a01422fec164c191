"""DeviceArray and zero-copy exchange with torch and cupy (DLPack, __cuda_array_interface__),
and the GPU pipeline's handling of GPU inputs and outputs, without TensorRT.

The first tests run anywhere (capsule bookkeeping on a host address that is never dereferenced);
the ``gpu`` tests skip, with the reason, where cuda-python, a GPU, torch or cupy is missing.
"""

from __future__ import annotations

import gc
from typing import Dict

import numpy as np
import pytest

from trtc.runtime import InputError, TensorSpec, cuda
from trtc.runtime import dlpack
from trtc.runtime.dlpack import DeviceArray, as_device_array, is_device_array

from _threads import run_in_threads

GPU_REASON = cuda.gpu_unavailable_reason(0)
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))


# ---------------------------------------------------------------------------------------------
# Anywhere: the DLPack capsule protocol (export, consume, release)
# ---------------------------------------------------------------------------------------------
def _fake(shape=(3, 4), dtype="float32") -> DeviceArray:
    host = np.zeros(shape, dtype)  # stands in for device memory: nothing here reads it
    return DeviceArray(host.ctypes.data, shape, dtype, 0, owner=host)


def test_capsule_roundtrip_and_release():
    before = len(dlpack._EXPORTED)
    array = _fake()
    view = dlpack._from_capsule(array.__dlpack__(), None, "x")
    assert (view.ptr, view.shape, view.dtype, view.device) == (array.ptr, (3, 4), np.float32, 0)
    assert view.contiguous and len(dlpack._EXPORTED) == before + 1
    del view
    gc.collect()
    assert len(dlpack._EXPORTED) == before  # the consumer's deleter released the export


def test_unconsumed_capsule_releases_on_destruction():
    before = len(dlpack._EXPORTED)
    capsule = _fake().__dlpack__()
    assert len(dlpack._EXPORTED) == before + 1
    del capsule
    gc.collect()
    assert len(dlpack._EXPORTED) == before


def test_consumed_capsule_cannot_be_consumed_twice():
    capsule = _fake().__dlpack__()
    dlpack._from_capsule(capsule, None, "x")
    with pytest.raises(InputError, match="not an unversioned 'dltensor'"):
        dlpack._from_capsule(capsule, None, "x")


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "uint8", "int32",
                                   "int64", "bool"])
def test_capsule_dtypes(dtype):
    view = dlpack._from_capsule(_fake((2,), dtype).__dlpack__(), None, "x")
    assert view.dtype == np.dtype(dtype)


def test_device_array_protocols():
    array = _fake((2, 3), "float16")
    assert array.__dlpack_device__() == (dlpack.KDL_CUDA, 0)
    iface = array.__cuda_array_interface__
    assert iface["shape"] == (2, 3) and iface["typestr"] == "<f2" and iface["version"] == 3
    assert iface["data"] == (array.ptr, False) and iface["strides"] is None
    assert (array.nbytes, array.size, array.ndim) == (12, 6, 2)
    with pytest.raises(BufferError):
        array.__dlpack__(dl_device=(dlpack.KDL_CPU, 0))
    with pytest.raises(BufferError):
        array.__dlpack__(copy=True)


def test_contiguity_rule():
    assert dlpack._is_c_contiguous((3, 4), (4, 1))
    assert dlpack._is_c_contiguous((3, 4), None)
    assert not dlpack._is_c_contiguous((3, 4), (1, 3))
    assert dlpack._is_c_contiguous((3, 1), (1, 99))  # size-1 dimensions do not count
    assert dlpack._is_c_contiguous((0, 4), (1, 1))


def test_host_arrays_are_not_device_arrays():
    assert not is_device_array(np.zeros(3))
    assert not is_device_array([1, 2, 3])
    assert is_device_array(_fake())


# ---------------------------------------------------------------------------------------------
# On a GPU, with torch and cupy
# ---------------------------------------------------------------------------------------------
def _torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def _cupy():
    return pytest.importorskip("cupy")


def _uploaded(values: np.ndarray) -> DeviceArray:
    cuda.set_device(0)
    array = DeviceArray.empty(values.shape, values.dtype, 0)
    rt = cuda.cudart()
    cuda.check(rt.cudaMemcpy(array.ptr, values.ctypes.data, values.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
    return array


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32", "uint8", "bool"])
def test_device_array_into_torch_shares_memory(dtype):
    torch = _torch()
    values = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    array = _uploaded(values)
    tensor = torch.from_dlpack(array)
    assert tensor.is_cuda and tensor.data_ptr() == array.ptr and tuple(tensor.shape) == (2, 3, 4)
    assert np.array_equal(tensor.cpu().numpy(), values)
    if dtype != "bool":
        tensor.add_(1)
        torch.cuda.synchronize()
        assert np.array_equal(array.numpy(), values + 1)
    via_cai = torch.as_tensor(array, device="cuda")
    assert via_cai.data_ptr() == array.ptr


@pytest.mark.gpu
@needs_gpu
def test_torch_keeps_the_device_array_alive():
    torch = _torch()
    before = len(dlpack._EXPORTED)
    tensor = torch.from_dlpack(_uploaded(np.full((1000,), 7.0, np.float32)))
    gc.collect()
    assert float(tensor.sum()) == 7000.0
    del tensor
    gc.collect()
    assert len(dlpack._EXPORTED) == before


@pytest.mark.gpu
@needs_gpu
def test_device_array_into_cupy_shares_memory():
    cp = _cupy()
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    array = _uploaded(values)
    for view in (cp.from_dlpack(array), cp.asarray(array)):
        assert view.data.ptr == array.ptr and view.shape == (3, 4) and view.dtype == np.float32
        assert np.array_equal(cp.asnumpy(view), values)


@pytest.mark.gpu
@needs_gpu
def test_torch_tensor_read_in_place_after_pending_work():
    torch = _torch()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # work still queued on torch's current (side) stream
        big = torch.ones((4096, 4096), device="cuda")
        tensor = (big @ big).sum(dim=0) / 4096.0  # = 4096 * ones
        view = as_device_array(tensor, "x")
    assert view.ptr == tensor.data_ptr() and view.shape == (4096,) and view.dtype == np.float32
    assert view.contiguous and view.sync_stream == cuda.LEGACY_STREAM and view.device == 0
    stream = cuda.Stream()
    stream.wait_for(view.sync_stream)
    out = cuda.PinnedBuffer(view.shape, view.dtype)
    stream.copy_d2h(out.ptr, view.ptr, view.nbytes)
    stream.synchronize()
    assert np.all(out.array == 4096.0)


@pytest.mark.gpu
@needs_gpu
def test_cupy_and_cuda_array_interface_inputs_read_in_place():
    cp = _cupy()
    data = cp.arange(20, dtype=cp.float32).reshape(4, 5)
    view = as_device_array(data, "x")
    assert view.ptr == data.data.ptr and view.shape == (4, 5) and view.contiguous

    class CaiOnly:  # like numba or older libraries: no __dlpack__
        def __init__(self, array):
            self.__cuda_array_interface__ = array.__cuda_array_interface__
            self.keep = array

    assert is_device_array(CaiOnly(data))
    view = as_device_array(CaiOnly(data), "x")
    assert view.ptr == data.data.ptr and view.device == 0 and view.contiguous
    assert not as_device_array(CaiOnly(data.T), "x").contiguous
    assert not as_device_array(data.T, "x").contiguous


@pytest.mark.gpu
@needs_gpu
def test_refused_gpu_arrays_are_input_errors():
    torch = _torch()
    assert not is_device_array(torch.zeros(3))  # a CPU tensor goes the numpy way
    assert is_device_array(torch.zeros(3, device="cuda"))
    with pytest.raises(InputError, match="input 'x': cannot read Tensor in place.*grad"):
        as_device_array(torch.zeros(3, device="cuda", requires_grad=True), "x")


# ---------------------------------------------------------------------------------------------
# The GPU pipeline's input checks and host/device plumbing, with a host stage and no engine
# ---------------------------------------------------------------------------------------------
class DoubleOnHost:
    """A residual stage stand-in (what MXNet does on the host): y = 2 * x."""

    name, inputs, outputs = "double", ["x"], ["y"]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"y": feeds["x"] * 2}


def _pipeline(max_contexts: int = 4):
    from trtc.runtime.stages.engine_cuda import GpuPipeline

    return GpuPipeline([DoubleOnHost()], ["x"], ["y"], max_contexts=max_contexts)


SPEC = TensorSpec((2, 3), np.dtype("float32"))


@pytest.mark.gpu
@needs_gpu
def test_pipeline_device_input_checks():
    torch = _torch()
    pipeline = _pipeline()
    good = torch.ones((2, 3), device="cuda")
    assert pipeline.device_input("x", good, SPEC).ptr == good.data_ptr()
    with pytest.raises(InputError, match=r"input 'x': wrong shape: expected shape \(2, 3\), got \(3, 2\)"):
        pipeline.device_input("x", torch.ones((3, 2), device="cuda"), SPEC)
    with pytest.raises(InputError, match="wrong rank"):
        pipeline.device_input("x", torch.ones((6,), device="cuda"), SPEC)
    with pytest.raises(InputError, match="expected dtype float32, got float16"):
        pipeline.device_input("x", good.half(), SPEC)
    with pytest.raises(InputError, match="not C-contiguous"):
        pipeline.device_input("x", torch.ones((3, 2), device="cuda").t(), SPEC)


@pytest.mark.gpu
@needs_gpu
def test_pipeline_numpy_and_device_in_and_out():
    torch = _torch()
    pipeline = _pipeline()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(pipeline.run({"x": x}, "numpy")["y"], 2 * x)
    out = pipeline.run({"x": x}, "device")["y"]
    assert isinstance(out, DeviceArray) and np.array_equal(out.numpy(), 2 * x)
    tensor = torch.from_numpy(x).cuda()
    feeds = {"x": pipeline.device_input("x", tensor, SPEC)}
    result = torch.from_dlpack(pipeline.run(feeds, "device")["y"])
    assert torch.equal(result, tensor * 2)
    assert np.array_equal(pipeline.run(feeds, "numpy")["y"], 2 * x)


@pytest.mark.gpu
@needs_gpu
def test_pipeline_threads_share_a_bounded_pool():
    pipeline = _pipeline(max_contexts=2)

    def work(seed: int) -> None:
        for i in range(10):
            x = np.full((2, 3), seed * 10 + i, np.float32)
            output = "device" if i % 2 else "numpy"
            y = pipeline.run({"x": x}, output)["y"]
            y = y.numpy() if output == "device" else y
            assert np.array_equal(y, 2 * x)

    run_in_threads(work)
    assert 1 <= pipeline.contexts_created <= 2
