"""The runtime is thin: importing and using trtc.runtime never imports the compiler's
dependencies. Proven in a subprocess where they are made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ["mxnet", "onnx", "onnx_graphsurgeon", "typer"]

_BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    script = _BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_import_runtime_without_compiler_dependencies():
    proc = _run(
        """
        import trtc.runtime, trtc.runtime.bundle, trtc.runtime.model, trtc.runtime.cuda
        import trtc.runtime.stages.engine_cpu, trtc.runtime.stages.engine_cuda
        bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
        assert not bad, bad
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_load_and_run_engine_only_bundle_without_mxnet(r18_bundle):
    proc = _run(
        f"""
        import numpy as np, trtc.runtime as rt
        m = rt.load({str(r18_bundle)!r}, device="cpu")
        out = m(data=np.random.rand(1, 3, 224, 224).astype("float32"))
        assert list(out) == list(m.outputs)
        bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
        assert not bad, bad
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_residual_bundle_without_mxnet_says_what_to_install(compiled):
    """--residual mxnet: the op runs in an MXNet stage; without MXNet, load() says in one line
    which ops need it and what MXNet 1.9.1 needs (here, on Python 3.11, the pip line)."""
    bundle = compiled("resnet18_v2", exclude_ops=("Pooling",), residual="mxnet")
    proc = _run(
        f"""
        import trtc.runtime as rt
        try:
            rt.load({str(bundle)!r}, device="cpu")
        except rt.IncompatibleError as e:
            print("IncompatibleError:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.strip()
    assert text.count("\n") == 0, text
    assert "Pooling" in text and "in MXNet stages" in text and "MXNet is not installed" in text, text
    assert "Python <= 3.11 with numpy < 1.24" in text, text
    if sys.version_info < (3, 12):
        assert "pip install mxnet==1.9.1 'numpy<1.24'" in text, text


def test_ops_out_of_engines_run_without_mxnet_by_default(compiled):
    """The default (--residual onnxruntime): the same op, kept out of the engine, runs in an ONNX
    Runtime stage, and the bundle loads and runs with MXNet unimportable."""
    bundle = compiled("resnet18_v2", exclude_ops=("Pooling",))
    proc = _run(
        f"""
        import numpy as np, trtc.runtime as rt
        m = rt.load({str(bundle)!r}, device="cpu")
        kinds = [s["kind"] for s in m.manifest["stages"]]
        assert "onnx" in kinds and "residual" not in kinds, kinds
        assert m.manifest["requires"]["mxnet"] is False
        out = m(data=np.random.rand(1, 3, 224, 224).astype("float32"))
        bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
        assert not bad, bad
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_import_trtc_loads_neither_mxnet_nor_the_compile_api():
    proc = _run(
        """
        import trtc, trtc.runtime
        assert trtc.CompileSettings and trtc.TrtcError
        bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED or m in ("trtc.api", "trtc.compiler")]
        assert not bad, bad
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_output_mxnet_without_mxnet_says_what_to_install(r18_bundle):
    proc = _run(
        f"""
        import numpy as np, trtc.runtime as rt
        m = rt.load({str(r18_bundle)!r}, device="cpu")
        try:
            m(data=np.zeros((1, 3, 224, 224), np.float32), output="mxnet")
        except rt.UsageError as e:
            print("UsageError:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "output='mxnet' needs MXNet" in proc.stdout and "pip install mxnet" in proc.stdout


def test_mxnet_is_imported_only_for_ndarrays_in_or_out(r18_bundle):
    """MXNet importable: an engine-only bundle run on numpy still never imports it; passing an
    NDArray (the caller imported MXNet to make it) or asking for output='mxnet' is what does."""
    code = textwrap.dedent(
        f"""
        import sys, numpy as np, trtc.runtime as rt
        m = rt.load({str(r18_bundle)!r}, device="cpu")
        x = np.random.rand(1, 3, 224, 224).astype("float32")
        out = m(data=x)
        assert "mxnet" not in sys.modules, "numpy in, numpy out imported mxnet"
        y = m(data=x, output="mxnet")
        import mxnet as mx
        assert all(isinstance(v, mx.nd.NDArray) for v in y.values())
        z = m(data=mx.nd.array(x))
        for name in out:
            assert np.array_equal(out[name], z[name]) and np.array_equal(out[name], y[name].asnumpy())
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
