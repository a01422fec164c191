"""The compiler never dies natively, nor with exit 70, on a user's model or a user's mistake
(issue 21 part 4), and a signal after the bundle is in place leaves exit 0.

Native crashes: TensorRT's builder recursing over a deep network, MXNet's forward on inputs it
cannot take (a Reshape whose target does not hold its input: MXNet infers its shape without
checking, then crashes running it; a Convolution num_group=0: SIGFPE), a custom op crashing in
the accuracy gate. Either a cheap check first names the op (UsageError, exit 2), or the step
runs in a forked child (trtc/_isolate.py) and its crash is one error line (exit 1), or, for a
build, a failed build the partitioner splits. Never a .partial file left behind.

Every compile here is a real `trtc compile` (real MXNet, TensorRT-RTX, ONNX Runtime) in a
subprocess, so a crash of the compiler fails the test instead of killing pytest; those that
could hang before the fix (a FIFO read) run with a timeout.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from models import tiny
from trtc.runtime import load
from trtc.runtime.bundle import read_bundle

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only (fork, FIFOs)")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _partials(*directories: Path) -> List[str]:
    return sorted(p.name for d in directories if d.is_dir() for p in d.iterdir()
                  if p.name.endswith(".partial"))


def _compile(params: Path, *args: str, timeout: float = 600,
             memory_limit: Optional[int] = None) -> subprocess.CompletedProcess:
    """`trtc compile PARAMS ARGS -q` in a subprocess (address space capped at ``memory_limit``
    bytes when given: an allocation fails there instead of the machine running out)."""
    def cap() -> None:
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run([sys.executable, "-m", "trtc.cli", "compile", str(params), "-q", *args],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


def _one_error(done: subprocess.CompletedProcess, code: int, *phrases: str) -> str:
    """The command exited with ``code`` and said so in one ``error:`` line holding
    ``phrases``; no traceback, no internal error."""
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])
    return errors[0]


def _save(symbol: Any, params: Dict[str, np.ndarray], shapes: Dict[str, Tuple[int, ...]],
          directory: Path, name: str) -> Path:
    """Write NAME-symbol.json (input shapes recorded) + NAME-0000.params; returns the params."""
    import mxnet as mx

    from trtc.zoo import record_input_shapes

    directory.mkdir(parents=True, exist_ok=True)
    symbol.save(str(directory / f"{name}-symbol.json"))
    mx.nd.save(str(directory / f"{name}-0000.params"),
               {k: mx.nd.array(v, dtype=v.dtype) for k, v in params.items()})
    record_input_shapes(directory / f"{name}-symbol.json", shapes)
    return directory / f"{name}-0000.params"


def _conv(x: Any, name: str, cin: int, cout: int, params: Dict[str, np.ndarray],
          kernel: int = 3) -> Any:
    import mxnet as mx

    rng = np.random.default_rng(len(params))
    params[f"arg:{name}_weight"] = (rng.standard_normal((cout, cin, kernel, kernel)) * 0.2).astype("float32")
    params[f"arg:{name}_bias"] = np.zeros(cout, "float32")
    return mx.sym.Convolution(x, num_filter=cout, kernel=(kernel, kernel),
                              pad=(kernel // 2, kernel // 2), name=name)


def _relu_chain(directory: Path, length: int) -> Path:
    """A conv, then ``length`` ReLUs in a chain: a network as deep as its op count."""
    import mxnet as mx

    params: Dict[str, np.ndarray] = {}
    x = _conv(mx.sym.var("data"), "conv", 3, 4, params)
    for i in range(length):
        x = mx.sym.relu(x, name=f"relu{i}")
    return _save(x, params, {"data": (1, 3, 4, 4)}, directory, f"chain{length}")


def _fixed_batch_reshape(directory: Path, target: Tuple[int, ...], batch: int = 1,
                         channels: int = 4, size: int = 8, name: str = "flat") -> Path:
    """conv -> relu -> Reshape(shape=target): a reshape that takes one batch size only."""
    import mxnet as mx

    params: Dict[str, np.ndarray] = {}
    x = mx.sym.relu(_conv(mx.sym.var("data"), "conv", 3, channels, params), name="relu")
    x = mx.sym.Reshape(x, shape=target, name="flat")
    x = mx.sym.softmax(x, name="prob")
    return _save(x, params, {"data": (batch, 3, size, size)}, directory, name)


# ----------------------------------------------------------------------------------------------
# 1. native crashes
# ----------------------------------------------------------------------------------------------
def test_a_3000_op_chain_compiles(tmp_path: Path) -> None:
    """3,000 ReLUs in a chain: TensorRT-RTX's builder recursed past the 8 MiB main stack
    (SIGSEGV, the compiler gone). It now builds in a child process on a thread with 256 MiB of
    stack: one engine, verified."""
    params = _relu_chain(tmp_path, 3000)
    target = tmp_path / "chain.trtb"
    done = _compile(params, "-o", str(target), "--json")
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert _partials(tmp_path) == []
    assert [s["kind"] for s in read_bundle(target).manifest["stages"]] == ["engine"]
    out = load(target, device="cpu")(data=np.ones((1, 3, 4, 4), np.float32))
    assert np.isfinite(next(iter(out.values()))).all()


def test_a_builder_crash_is_a_build_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same recursion made to overflow (a 1 MiB build stack, 600 ReLUs): the builder dies by
    SIGSEGV in its child process and build() raises BuildError saying so; this process lives."""
    import onnx
    from onnx import TensorProto, helper

    from trtc import _defaults
    from trtc.backends import BuildError, get_backend

    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"], name=f"n{i}")
             for i in range(600)]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("t599", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    backend = get_backend("tensorrt_rtx")
    assert backend.build(model.SerializeToString()).plan  # the default stack builds it
    monkeypatch.setattr(_defaults, "BUILD_STACK_BYTES", 1 << 20)
    with pytest.raises(BuildError, match=r"builder crashed building this network \(SIGSEGV"):
        backend.build(model.SerializeToString())
    assert onnx.__version__  # still here


def test_a_crashing_build_splits_the_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Through the partitioner: the crash is a failed build, the segment splits where the
    report says, and the model compiles (halves short enough for the stack)."""
    from trtc import CompileSettings, _defaults, compile

    params = _relu_chain(tmp_path, 600)
    monkeypatch.setattr(_defaults, "BUILD_STACK_BYTES", 1 << 20)
    result = compile(CompileSettings(params=params, output=tmp_path / "split.trtb"))
    crashed = [d for d in result.report.decisions if d.reason == "build_failed"]
    assert crashed and "crashed" in crashed[0].message and "SIGSEGV" in crashed[0].message
    assert len(result.report.engine_segments) >= 2
    assert _partials(tmp_path) == []


_CRASHING_OP = '''
"""An MXNet CustomOp whose forward reads address 0, as a buggy extension would."""
import ctypes

import mxnet as mx


class Crash(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        ctypes.string_at(0)
        self.assign(out_data[0], req[0], in_data[0])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        pass


@mx.operator.register("trtc_test_crash")
class CrashProp(mx.operator.CustomOpProp):
    def list_arguments(self):
        return ["data"]

    def list_outputs(self):
        return ["output"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return Crash()
'''


@pytest.fixture(scope="module")
def crashing_op(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module registering the crashing custom op, imported here too (MXNet needs the op
    registered to build a symbol using it; nothing here runs it in-process)."""
    import importlib.util

    module = Path(tmp_path_factory.mktemp("crash-op")) / "crash_op.py"
    module.write_text(_CRASHING_OP)
    spec = importlib.util.spec_from_file_location("trtc_test_crash_op", module)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return module


def _crashing_model(directory: Path) -> Path:
    """conv-relu-conv, the crashing custom op, conv-relu-conv (two engines and an MXNet stage)."""
    import mxnet as mx

    params: Dict[str, np.ndarray] = {}
    x = mx.sym.relu(_conv(mx.sym.var("data"), "c1", 3, 4, params), name="r1")
    x = mx.sym.Custom(_conv(x, "c2", 4, 4, params), op_type="trtc_test_crash", name="crash")
    x = _conv(mx.sym.relu(_conv(x, "c3", 4, 4, params), name="r2"), "c4", 4, 4, params)
    return _save(x, params, {"data": (1, 3, 8, 8)}, directory, "crashy")


def test_mxnet_forward_crash_is_an_error(tmp_path: Path, crashing_op: Path) -> None:
    """MXNet's forward that dies by a signal (a custom op reading address 0) raises
    ReferenceFailed naming the signal and the shapes: it runs in a child; this process lives."""
    from trtc import verify
    from trtc.frontend import load_graph

    params = _crashing_model(tmp_path)
    graph = load_graph(tmp_path / "crashy-symbol.json", params)
    with pytest.raises(verify.ReferenceFailed,
                       match=r"MXNet's own forward crashed \(SIGSEGV, signal 11\) at data:1x3x8x8"):
        verify.mxnet_forward(graph, {"data": np.ones((1, 3, 8, 8), np.float32)})


def test_a_crash_in_the_gate_is_one_error(tmp_path: Path, crashing_op: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model whose MXNet forward crashes in the gate (SIGSEGV in a custom op, kept in an MXNet
    stage): the compiler used to die there with its temp file beside the target. MXNet's
    reference forward runs first, in a child process: one error line naming it and the
    shapes, exit 1, the old bundle untouched, no temp file."""
    model = _crashing_model(tmp_path / "model")
    target = tmp_path / "out.trtb"
    old = tiny.bundle("tiny", tmp_path_factory).read_bytes()
    target.write_bytes(old)
    done = _compile(model, "--import", str(crashing_op), "-o", str(target))
    _one_error(done, 1, "accuracy gate", "MXNet's own forward crashed (SIG", "data:1x3x8x8",
               "--no-verify")
    assert target.read_bytes() == old
    assert _partials(tmp_path, tmp_path / "model") == []


@pytest.mark.parametrize("case", ["range", "odd", "fixed"])
def test_a_reshape_that_cannot_take_the_shape_is_a_usage_error(tmp_path: Path, case: str) -> None:
    """README "Dynamic shapes": a model that cannot take the range (a Reshape with a fixed
    batch) is a usage error naming the op. MXNet's shape inference accepts such a Reshape
    (1x256 from 4x4x8x8), so trtc compares the values it holds: at the range's min and max,
    the gate's odd size, and a fixed shape. Before: exit 3 (ONNX Runtime refusing it in the
    gate) or a crash in MXNet's forward."""
    if case == "range":  # batch 4 does not fit shape=(1, 256)
        params, flags = _fixed_batch_reshape(tmp_path, (1, 256)), ["--input", "data:1..4x3x8x8"]
        phrases = ["cannot take the --input range", "at its max", "Reshape 'flat'",
                   "4x4x8x8 (1,024 values) into 1x256"]
    elif case == "odd":  # 27 values a sample: batch 2 and 4 split in two rows, batch 3 does not
        params = _fixed_batch_reshape(tmp_path, (2, -1), batch=2, channels=3, size=3)
        flags = ["--input", "data:2..4x3x3x3"]
        phrases = ["odd size", "data:3x3x3x3", "Reshape 'flat'", "81 values"]
    else:  # the symbol's own shape has batch 4
        params, flags = _fixed_batch_reshape(tmp_path, (1, 256), batch=4), []
        phrases = ["data:4x3x8x8", "Reshape 'flat'"]
    done = _compile(params, *flags, "-o", str(tmp_path / "m.trtb"))
    _one_error(done, 2, *phrases)
    assert _partials(tmp_path) == []


def test_a_zero_num_group_is_a_usage_error(tmp_path: Path) -> None:
    """num_group=0 was a SIGFPE inside MXNet's symbol loader; now checked first."""
    params = tiny.export("tiny", tmp_path)
    symbol = tmp_path / "tiny-symbol.json"
    symbol.write_text(symbol.read_text().replace('"num_group": "1"', '"num_group": "0"'))
    _one_error(_compile(params, "-o", str(tmp_path / "m.trtb")), 2, "num_group='0'",
               "must be positive", "tiny-symbol.json")


# ----------------------------------------------------------------------------------------------
# 2. user mistakes that were exit 70 (or a hang)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,method", [("nan", "minmax"), ("inf", "entropy"),
                                        ("allnan", "minmax")])
def test_nonfinite_calibration_is_a_usage_error(tmp_path: Path, bad: str, method: str) -> None:
    """NaN/Inf in --calibration data: ONNX Runtime's calibrators fail on it ("scale issue",
    "range [nan, nan] is not finite": exit 70) or the gate did. One line naming the sample."""
    params = tiny.export("tiny", tmp_path)
    data = np.random.default_rng(0).random((4, 1, 3, 16, 16)).astype(np.float32)
    if bad == "allnan":
        data[:] = np.nan
    else:
        data[2, 0, 0, 0, 0] = np.nan if bad == "nan" else np.inf
    np.savez(tmp_path / "calib.npz", data=data)
    done = _compile(params, "--int8", "--calibration", str(tmp_path / "calib.npz"),
                    "--calibration-method", method, "-o", str(tmp_path / "m.trtb"))
    sample = "sample 1 of 4" if bad == "allnan" else "sample 3 of 4"
    _one_error(done, 2, "--calibration", sample, "calib.npz", "input 'data'", "NaN/Inf")
    assert _partials(tmp_path) == []


def test_a_range_too_large_to_verify_is_one_line(tmp_path: Path) -> None:
    """A range whose max the gate cannot hold in memory (a 512-channel conv at batch 10^7:
    TBs) fails before anything is built, saying how much and what to do. Before: an
    allocation failure deep in the gate (exit 70) or the machine out of memory. The address
    space is capped so a regression fails the test, not the machine."""
    import mxnet as mx

    params: Dict[str, np.ndarray] = {}
    x = mx.sym.relu(_conv(mx.sym.var("data"), "wide", 3, 512, params, kernel=1), name="relu")
    x = _conv(x, "narrow", 512, 4, params, kernel=1)
    model = _save(x, params, {"data": (1, 3, 8, 8)}, tmp_path, "wide")
    start = time.monotonic()
    done = _compile(model, "--input", "data:1..10000000x3x8x8", "-o", str(tmp_path / "m.trtb"),
                    memory_limit=16 << 30)
    _one_error(done, 2, "needs at least", "GiB", "data:10000000x3x8x8", "its inputs, and",
               "narrow the --input range", "--no-verify")
    assert time.monotonic() - start < 120
    assert _partials(tmp_path) == []


def test_out_of_memory_in_the_gate_is_one_line(tmp_path: Path) -> None:
    """Memory that runs out for the gate (here a 3.5 GB address-space cap; on a real machine
    the same happens at a larger range) is one line saying what to do, not an internal error,
    and nothing is left behind: refused before any build (exit 2) where the gate's lower bound
    already exceeds what the cap leaves (the up-front check counts the address-space limit), or
    a CompileError (exit 1) when memory runs out while it runs."""
    params = tiny.export("tiny", tmp_path)
    done = _compile(params, "--input", "data:1..100000x3x16x16", "-o", str(tmp_path / "m.trtb"),
                    memory_limit=3500 << 20)
    if done.returncode == 2:
        _one_error(done, 2, "needs at least", "data:100000x3x16x16", "--no-verify")
    else:
        _one_error(done, 1, "out of memory while", "--no-verify")
    assert _partials(tmp_path) == [] and not (tmp_path / "m.trtb").exists()


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("what", ["sign-key", "sign", "verify"])
def test_a_key_that_is_a_fifo_is_a_usage_error(tmp_path: Path, what: str,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """A FIFO as a key file: reading it blocked forever. Now refused without opening it."""
    fifo = _fifo(tmp_path / "key.pem")
    bundle = tmp_path / "b.trtb"
    bundle.write_bytes(tiny.bundle("tiny", tmp_path_factory).read_bytes())
    if what == "sign-key":
        args = ["compile", str(tiny.export("tiny", tmp_path / "m")), "--sign-key", str(fifo),
                "-o", str(tmp_path / "m.trtb"), "-q"]
    else:
        args = [what, str(bundle), "--key", str(fifo)]
    done = subprocess.run([sys.executable, "-m", "trtc.cli", *args], capture_output=True,
                          text=True, timeout=120)
    _one_error(done, 2, str(fifo), "not a regular file (a FIFO)")


@pytest.mark.parametrize("flag,kind", [("params", "dir"), ("params", "fifo"), ("symbol", "dir"),
                                       ("symbol", "fifo"), ("verify-inputs", "dir"),
                                       ("verify-inputs", "fifo"), ("calibration", "fifo"),
                                       ("calibration", "fifo-inside")])
def test_a_path_that_is_not_a_file_says_what_it_is(tmp_path: Path, flag: str, kind: str) -> None:
    """A directory or FIFO given as a model, --verify-inputs or --calibration file was
    reported as "does not exist" (or, read, hung). Now the error says what it is."""
    params = tiny.export("tiny", tmp_path / "m")
    odd = tmp_path / ("odd.npz" if kind != "fifo-inside" else "calib")
    if kind == "dir":
        odd.mkdir()
    elif kind == "fifo":
        _fifo(odd)
    else:
        odd.mkdir()
        _fifo(odd / "sample.npz")
    args: List[str] = []
    if flag == "params":
        args = ["--symbol", str(tmp_path / "m" / "tiny-symbol.json")]
        params = odd
    elif flag == "symbol":
        args = ["--symbol", str(odd)]
    elif flag == "verify-inputs":
        args = ["--verify-inputs", str(odd)]
    else:
        args = ["--int8", "--calibration", str(odd)]
    done = _compile(params, *args, "-o", str(tmp_path / "out.trtb"), timeout=120)
    expected = "is a directory" if kind == "dir" else "is not a regular file (a FIFO)"
    error = _one_error(done, 2, expected)
    assert "does not exist" not in error and "no such file" not in error


# ----------------------------------------------------------------------------------------------
# 3. signals after the bundle is in place
# ----------------------------------------------------------------------------------------------
def _identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _compile_with_signal(params: Path, target: Path, signum: int, at: Optional[float],
                         ) -> Tuple[int, str]:
    """Compile to ``target``; send ``signum`` ``at`` seconds after the start, or (None) as soon
    as the target is replaced and then every 5 ms until the process ends. Returns (exit
    status, stderr)."""
    before = _identity(target)
    proc = subprocess.Popen([sys.executable, "-m", "trtc.cli", "compile", str(params), "-o",
                             str(target), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if at is not None:
            time.sleep(at)
            if proc.poll() is None:
                proc.send_signal(signum)
        else:
            deadline = time.monotonic() + 300
            while _identity(target) == before and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            while proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    break
                time.sleep(0.005)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def signal_model(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, bytes]:
    """tiny's params, and a good bundle of another model to put at the target first."""
    directory = Path(tmp_path_factory.mktemp("signals"))
    return tiny.export("tiny", directory), tiny.bundle("pair", tmp_path_factory).read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_after_the_rename_finish_with_exit_0(tmp_path: Path, signum: int,
                                                     signal_model: Tuple[Path, bytes]) -> None:
    """README: a signal after the rename lets the command finish (exit 0). A stream of them
    from the moment the bundle is in place to the process's end (interpreter shutdown
    included, where Python's own handlers are gone): before, exit -15 / 130."""
    params, old = signal_model
    target = tmp_path / "m.trtb"
    target.write_bytes(old)
    status, stderr = _compile_with_signal(params, target, signum, None)
    assert status == 0, (status, stderr[-2000:])
    assert target.read_bytes() != old
    assert load(target, device="cpu").inputs["data"].shape == (1, 3, 16, 16)
    assert _partials(tmp_path) == []


def test_a_signal_at_any_moment_leaves_the_old_bundle_or_the_new(
        tmp_path: Path, signal_model: Tuple[Path, bytes]) -> None:
    """SIGTERM and SIGINT in turn, at moments spread over a whole compile: either the old bundle
    is intact and the exit says terminated/interrupted (143 / 130, or the signal's own status
    while Python starts), or the new bundle is in place and the exit is 0. Never a temp file."""
    params, old = signal_model
    outcomes = set()
    moments = (0.3, 1.5, 3.0, 4.5, 6.0, 9.0)
    for number, at in enumerate(moments):
        signum = (signal.SIGTERM, signal.SIGINT)[number % 2]
        target = tmp_path / f"m{number}.trtb"
        target.write_bytes(old)
        status, stderr = _compile_with_signal(params, target, signum, at)
        if target.read_bytes() == old:
            assert status in (128 + signum, -signum), (at, status, stderr[-2000:])
            outcomes.add("old")
        else:
            assert status == 0, (at, status, stderr[-2000:])
            load(target, device="cpu")
            outcomes.add("new")
        assert "Traceback" not in stderr, stderr[-2000:]
        assert _partials(tmp_path) == []
    assert outcomes == {"old", "new"}, outcomes  # the moments spanned the compile


# what a script below ends with: how its try block ended (the signal's name is its argv[1])
_OUTCOME = """
except KeyboardInterrupt:
    print("interrupted")
except SystemExit as exc:
    print("exit", exc.code)
else:
    print("carried on")
"""


def _assert_signal_outcome(script: str, name: str, said: str) -> None:
    """Run ``script`` + ``_OUTCOME`` with signal ``name``: it must print ``said``, and never
    "Exception ignored" or a traceback on stderr."""
    done = subprocess.run([sys.executable, "-c", script + _OUTCOME, name], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == said, (done.stdout, done.stderr[-2000:])
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr


_SIGNAL_DURING_FORK = r"""
import os, signal, sys
from trtc import _isolate
from trtc.cli import _install_signal_handlers

_install_signal_handlers()
armed = []
os.register_at_fork(after_in_parent=lambda: armed and os.kill(os.getpid(), armed.pop()))
armed.append(getattr(signal, sys.argv[1]))
try:
    _isolate.in_child("a step", sum, [1, 2])
"""


@pytest.mark.parametrize("name, said", [("SIGINT", "interrupted"), ("SIGTERM", "exit 143")])
def test_a_signal_during_fork_reaches_the_compiler(name: str, said: str) -> None:
    """CI caught a Ctrl-C that arrived while fork() ran its at-fork callbacks (logging's lock
    release): the handler's KeyboardInterrupt was printed as "Exception ignored" and lost, and
    the compile went on. The signal is now held across fork() and raised once it returns."""
    _assert_signal_outcome(_SIGNAL_DURING_FORK, name, said)


_SIGNAL_IN_A_FINALIZER = r"""
import os, signal, sys, time
from trtc.cli import _install_signal_handlers

_install_signal_handlers()


class Dying:
    def __del__(self):
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        sum([1, 2])  # the handler runs here, where nothing can propagate


try:
    Dying()
    for _ in range(500):
        time.sleep(0.01)
"""


@pytest.mark.parametrize("name, said", [("SIGINT", "interrupted"), ("SIGTERM", "exit 143")])
def test_a_signal_in_a_finalizer_is_not_lost(name: str, said: str) -> None:
    """The general case of the one above: a signal whose handler runs inside a __del__ is sent
    again (sys.unraisablehook) and then unwinds the command, never "Exception ignored"."""
    _assert_signal_outcome(_SIGNAL_IN_A_FINALIZER, name, said)


_CHILD_OUTLIVES = r"""
import os, sys, time
from trtc import _isolate

def step(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

_isolate.in_child("a long build", step, sys.argv[1])
"""


def test_a_killed_compiler_takes_its_child_along(tmp_path: Path) -> None:
    """A compiler killed by SIGKILL (the OOM killer, kill -9, a CI runner's timeout) left its
    forked builder running at full CPU under init. The child now dies with its parent."""
    marker = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD_OUTLIVES, str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(marker.read_text())
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:  # gone, or a zombie nobody reaps (a container's init may not)
                if Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] == "Z":
                    break
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail(f"the child {child} outlived its killed parent by 10 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_crash_in_shape_inference_is_one_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """MXNet's shape inference of a model divides by attributes no check knows of (Correlation's
    stride: SIGFPE killed the compiler). It runs isolated: with the attribute check taken away,
    the crash is still one UsageError naming the file and the signal."""
    import mxnet as mx

    from trtc.frontend import load_graph
    from trtc.runtime.errors import UsageError
    from trtc.runtime.stages import residual

    conv = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(1, 1), no_bias=True,
                              name="c")
    mx.sym.Correlation(conv, conv, stride1=0, stride2=0, name="corr").save(
        str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:c_weight": mx.nd.ones((2, 3, 1, 1))})
    with pytest.raises(UsageError, match="Correlation stride1='0' must be positive"):
        load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params",
                   {"data": (1, 3, 8, 8)})
    monkeypatch.delitem(residual._POSITIVE_ATTRS, "Correlation")
    with pytest.raises(UsageError, match=r"shape inference crashed on m-symbol.json \(SIGFPE"):
        load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params",
                   {"data": (1, 3, 8, 8)})


def _negative_pad(nodes: List[Dict[str, Any]]) -> None:
    next(n for n in nodes if n["op"] == "Convolution")["attrs"]["pad"] = "(-5, -5)"


def _softmax_axis_17(nodes: List[Dict[str, Any]]) -> None:
    next(n for n in nodes if n["op"] == "Activation").update(op="softmax", attrs={"axis": "17"})


@pytest.mark.parametrize("edit,said", [
    (_negative_pad, "pad='(-5, -5)' must not be negative"),
    (_softmax_axis_17, "has axis=17, outside its input's 4 axes"),
])
def test_attributes_mxnet_lets_through_are_usage_errors(tmp_path: Path, edit: Any,
                                                        said: str) -> None:
    """Convolution pad=(-5, -5) (MXNet's kernel reads outside its input) and softmax axis=17 on
    a 4-D tensor (MXNet's shape inference lets it through): both compiles ended in a failed
    gate (exit 1) advising --no-verify, which wrote a bundle that cannot run. Now refused with
    the model files."""
    import json

    params = tiny.export("tiny", tmp_path)
    symbol = tmp_path / "tiny-symbol.json"
    doc = json.loads(symbol.read_text())
    edit(doc["nodes"])
    symbol.write_text(json.dumps(doc))
    _one_error(_compile(params, "-o", str(tmp_path / "out.trtb"), timeout=120), 2, said)
