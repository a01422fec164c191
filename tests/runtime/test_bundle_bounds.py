"""What a bundle can make the runtime do is bounded, and each bound is named when it is hit:
ONNX ops outside what trtc's exporter writes (Loop, Scan, If: unbounded work from a few bytes),
node and member counts, the per-call memory estimate. Files are checked from their first bytes and
their ZIP directory before anything else is read (and are never read whole); what is not a regular
file is refused at once. The
compiler's temp file name fits a file name whatever the target's length. Loading and running a
bundle puts nothing on stdout.

Every edit comes with the checksums recomputed: these are bundles anyone can make."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack, write_members
from models import tiny
from trtc.runtime import BundleError, load
from trtc.runtime import bundle as bundle_format
from trtc.runtime.bundle import (MAX_CALL_BYTES, MAX_MEMBERS, MAX_ONNX_NODES, ONNX_OPS,
                                 partial_path, read_bundle, remove_stale_partials, write_bundle)

ROOT = Path(__file__).resolve().parents[2]
ONNX = "onnx/engine0.onnx"


def _refused(path: Path, *expected: str) -> str:
    with pytest.raises(BundleError) as info:
        load(path, device="cpu")
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)), text
    for part in expected:
        assert part in text, text
    return text


def _with_onnx(tmp_path: Path, source: Path, edit: Callable[[Any], None]) -> Path:
    import onnx

    members = members_of(source)
    model = onnx.load_from_string(dict(members)[ONNX])
    edit(model)
    members = [(n, model.SerializeToString() if n == ONNX else d) for n, d in members]
    path = tmp_path / "edited.trtb"
    path.write_bytes(repack(members, manifest_of(members), fix_checksums=True))
    return path


# ----------------------------------------------------------------------------------------------
# ONNX: only the ops trtc's exporter writes
# ----------------------------------------------------------------------------------------------
def _endless_loop(model: Any) -> None:
    """The graph's output goes through a Loop of 10^15 iterations that passes it on unchanged:
    it loaded and ran forever."""
    from onnx import TensorProto, helper

    graph = model.graph
    last = graph.node[-1]
    last.output[0], out = "before_loop", last.output[0]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    graph.initializer.extend([helper.make_tensor("trip", TensorProto.INT64, [], [10**15]),
                              helper.make_tensor("go", TensorProto.BOOL, [], [True])])
    graph.node.append(helper.make_node("Loop", ["trip", "go", "before_loop"], [out], body=body))


def _op(op_type: str, domain: str = "", **attrs: Any) -> Callable[[Any], None]:
    """An extra node (its output unused) of ``op_type``."""
    def edit(model: Any) -> None:
        from onnx import helper

        first = model.graph.input[0].name
        model.graph.node.append(helper.make_node(op_type, [first], ["unused"], domain=domain,
                                                 **attrs))
    return edit


def _subgraph() -> Any:
    from onnx import TensorProto, helper

    return helper.make_graph([], "g", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         None)])


@pytest.mark.parametrize("case", ["Loop", "Scan", "If", "Einsum", "com.microsoft:FusedConv",
                                  "Identity with a graph attribute", "If as a renamed Identity",
                                  "Multinomial", "RandomNormal"])
def test_onnx_ops_trtc_never_writes_are_refused_at_load(tmp_path: Path, good: Path,
                                                        case: str) -> None:
    edits: Dict[str, Callable[[Any], None]] = {
        "Loop": _endless_loop,
        "Scan": _op("Scan", body=_subgraph(), num_scan_inputs=1),
        "If": _op("If", then_branch=_subgraph(), else_branch=_subgraph()),
        "Einsum": _op("Einsum", equation="i->i"),
        "com.microsoft:FusedConv": _op("FusedConv", domain="com.microsoft"),
        "Identity with a graph attribute": _op("Identity", body=_subgraph()),
        "If as a renamed Identity": _op("Identity", domain="ai.onnx.ml"),
        # issue 21: a Multinomial with a huge sample size ran 70-114 s at 4.4 GB
        "Multinomial": _op("Multinomial", sample_size=2 ** 30),
        "RandomNormal": _op("RandomNormal", shape=[2 ** 20, 2 ** 10]),
    }
    path = _with_onnx(tmp_path, good, edits[case])
    start = time.perf_counter()
    text = _refused(path, "stage 'engine0': its ONNX ")
    assert time.perf_counter() - start < 5
    if case == "Identity with a graph attribute":
        assert "op 'Identity' carries a subgraph" in text
    else:
        name = case if ":" in case else (f"ai.onnx.ml:Identity" if "renamed" in case else case)
        assert f"uses op '{name}', which trtc's exporter never writes" in text


def test_onnx_op_list_covers_what_mxnet_onnx_can_write() -> None:
    """Every ONNX op named in mxnet.onnx's converters (and trtc's own ONNX edits) is allowed:
    a new converter cannot make the runtime refuse a bundle trtc wrote."""
    import mxnet
    from onnx import defs

    standard = {s.name for s in defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    sources = glob.glob(os.path.join(os.path.dirname(mxnet.__file__), "onnx", "mx2onnx", "**",
                                     "*.py"), recursive=True)
    sources += glob.glob(str(ROOT / "trtc" / "**" / "*.py"), recursive=True)
    text = "".join(Path(f).read_text() for f in sources)
    named = set(re.findall(r"['\"]([A-Z][A-Za-z0-9]+)['\"]", text)) & standard
    named -= {"Optional"}  # a typing name in trtc's own code, not an ONNX op anything writes
    # mxnet.onnx's random samplers: the partitioner keeps random ops in MXNet (their ONNX draws
    # other numbers), so no bundle trtc writes holds them; the runtime refuses them
    named -= {"Multinomial", "RandomNormal", "RandomUniform", "RandomUniformLike",
              "RandomNormalLike"}
    assert len(named) > 80 and named <= ONNX_OPS, sorted(named - ONNX_OPS)
    assert not {"Multinomial", "RandomNormal", "RandomUniform"} & ONNX_OPS
    assert not {"Loop", "Scan", "If", "SequenceMap"} & ONNX_OPS


def test_onnx_node_bound(tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtc.runtime import onnx_check

    load(good, device="cpu")
    monkeypatch.setattr(onnx_check, "MAX_ONNX_NODES", 3)  # the tiny model has 5
    _refused(good, "its ONNX has more than 3 nodes, the bound (MAX_ONNX_NODES)")
    assert MAX_ONNX_NODES >= 100_000


def test_bundles_the_compiler_writes_pass_the_onnx_check(mixed: Path, good: Path) -> None:
    from trtc.runtime.onnx_check import check_onnx

    for path in (mixed, good):
        bundle = read_bundle(path)
        for stage in bundle.engine_stages:
            check_onnx(bundle.read_member(stage["onnx"]))


# ----------------------------------------------------------------------------------------------
# Member counts and the per-call memory estimate
# ----------------------------------------------------------------------------------------------
def test_too_many_members_are_refused_from_the_zip_directory(tmp_path: Path, good: Path) -> None:
    members = members_of(good) + [(f"extra/m{i}", b"") for i in range(MAX_MEMBERS + 10)]
    data = write_members(members)
    path = tmp_path / "many.trtb"
    path.write_bytes(data)
    start = time.perf_counter()
    _refused(path, f"over the bound of {MAX_MEMBERS} members (MAX_MEMBERS)")
    # the end record lying about the count: the directory itself is counted, as far as the bound
    end = data.rindex(b"PK\x05\x06")
    lying = bytearray(data)
    struct.pack_into("<2H", lying, end + 8, 3, 3)
    path.write_bytes(bytes(lying))
    _refused(path, f"more than {MAX_MEMBERS} members (MAX_MEMBERS)")
    assert time.perf_counter() - start < 5


def test_the_per_call_memory_estimate_is_bounded(tmp_path: Path, good: Path) -> None:
    """A few lines of manifest claiming three 16 GiB outputs: refused before anything is made."""
    members = members_of(good)
    manifest = copy.deepcopy(manifest_of(members))
    manifest["stages"][0]["outputs"] += [{"name": f"ghost{i}", "shape": [2**31 - 1],
                                          "dtype": "float64"} for i in range(3)]
    path = tmp_path / "ghosts.trtb"
    path.write_bytes(repack(members, manifest))
    _refused(path, "a call would hold 48.0 GiB of tensors and params",
             f"over the bound of {MAX_CALL_BYTES // 2**30} GiB (MAX_CALL_BYTES)")
    assert bundle_format.call_bytes(manifest_of(members)) == 3 * 16 * 16 * 4 + 4 * 16 * 16 * 4


# ----------------------------------------------------------------------------------------------
# Streamed, bounded reading
# ----------------------------------------------------------------------------------------------
_LOAD = """
import resource, sys, time
from trtc.runtime import BundleError, load
start = time.perf_counter()
try:
    load(sys.argv[1], device="cpu")
except BundleError as exc:
    print(str(exc))
print(time.perf_counter() - start)
try:  # this process's own peak (ru_maxrss would include the parent's, from before the exec)
    with open("/proc/self/status") as status:
        print(next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) // 1024)
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _load_in_child(path: str) -> List[str]:
    """Load ``path`` in a child process with a timeout (a regression must fail, not hang);
    returns [message, seconds, peak RSS in MiB]."""
    done = subprocess.run([sys.executable, "-c", _LOAD, path], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    return lines


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.trtb"
    os.mkfifo(fifo)
    message, seconds, _ = _load_in_child(str(fifo))  # blocked forever in open() before
    assert message == f"{fifo}: is a FIFO (named pipe), not a bundle file; pass the .trtb file " \
                      "`trtc compile` wrote"
    assert float(seconds) < 5


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_refused_at_once(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    message, seconds, _ = _load_in_child(device)  # /dev/zero: read until memory ran out
    assert message.startswith(f"{device}: is a character device, not a bundle file")
    assert float(seconds) < 5


def test_a_directory_is_refused_with_one_line(tmp_path: Path) -> None:
    _refused(tmp_path, "is a directory, not a bundle file")


@pytest.mark.parametrize("start", [b"\x00" * 64, "trtc-bundle header"])
def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path, good: Path,
                                                   start: Any) -> None:
    """A 4 GiB (sparse) file: not a ZIP, or a ZIP whose first member is the marker but with no
    central directory. Both were read whole into memory before any check."""
    head = good.read_bytes()[:200] if start != b"\x00" * 64 else start
    path = tmp_path / "huge.bin"
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(4 * 2**30)
    message, seconds, peak_mib = _load_in_child(str(path))
    assert ("not a ZIP archive" in message) if start == b"\x00" * 64 else \
        ("no ZIP end of central directory record" in message), message
    assert float(seconds) < 5 and int(peak_mib) < 1024, (seconds, peak_mib)


# ----------------------------------------------------------------------------------------------
# The compiler's temp file beside a long target name
# ----------------------------------------------------------------------------------------------
def test_a_250_character_target_name_gets_a_temp_file_that_fits(tmp_path: Path,
                                                                good: Path) -> None:
    name = "m" * 245 + ".trtb"
    target = tmp_path / name
    tmp = Path(partial_path(target))  # ENAMETOOLONG before: ".NAME.HOST-PID.RANDOM.partial"
    assert tmp.parent == tmp_path and tmp.name.endswith(".partial") and len(tmp.name) <= 255
    other = Path(partial_path(tmp_path / ("m" * 245 + ".other")))  # same beginning
    assert tmp.name.split(".")[1] != other.name.split(".")[1]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dead = tmp.name.replace(f"-{os.getpid()}.", f"-{gone}.")  # left by a killed process
    (tmp_path / dead).write_bytes(b"")
    assert remove_stale_partials(target) == [str(tmp_path / dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tmp.name, other.name])
    bundle = read_bundle(good)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "members"}
    write_bundle(target, manifest, {n: bundle.read_member(n) for n in bundle.manifest["members"]})
    assert load(target, device="cpu").inputs["data"].shape == (1, 3, 16, 16)


# ----------------------------------------------------------------------------------------------
# Nothing on stdout
# ----------------------------------------------------------------------------------------------
def test_loading_and_running_print_nothing_on_stdout(tmp_path: Path, mixed: Path,
                                                     capfd: pytest.CaptureFixture) -> None:
    """An ONNX attribute name that is not UTF-8 made ONNX Runtime's Python layer print an
    "EP Error" banner on stdout and retry (breaking `trtc run --json`)."""
    members = members_of(mixed)
    onnx_bytes = dict(members)[ONNX]
    assert onnx_bytes.count(b"kernel_shape") > 0
    broken = onnx_bytes.replace(b"kernel_shape", b"kernel_shap\x80")
    members = [(n, broken if n == ONNX else d) for n, d in members]
    path = tmp_path / "utf8.trtb"
    path.write_bytes(repack(members, manifest_of(members)))
    capfd.readouterr()
    _refused(path, "ONNX Runtime cannot load its ONNX")
    model = load(mixed, device="cpu")
    outputs = model(**tiny.random_feeds("pair"))
    assert all(np.isfinite(v).all() for v in outputs.values())
    assert capfd.readouterr().out == ""


def test_many_stages_sharing_one_onnx_member_are_refused_at_once(tmp_path: Path,
                                                                 good: Path) -> None:
    """Issue 21: 10,000 stages sharing one ONNX member took 69 s and 10,003 threads to load.
    The number of ONNX Runtime sessions a bundle makes is bounded (MAX_ORT_STAGES), checked with
    the manifest, before any session exists."""
    import copy

    from trtc.runtime.bundle import MAX_ORT_STAGES

    members = members_of(good)
    manifest = copy.deepcopy(manifest_of(members))
    (stage,) = manifest["stages"]
    manifest["stages"] = [dict(copy.deepcopy(stage), name=f"engine{i}")
                          for i in range(MAX_ORT_STAGES + 1)]
    path = tmp_path / "many.trtb"
    path.write_bytes(repack(members, manifest, fix_checksums=True))
    start = time.perf_counter()
    _refused(path, f"more than the bound of {MAX_ORT_STAGES} engine and ONNX Runtime stages")
    assert time.perf_counter() - start < 5


# ----------------------------------------------------------------------------------------------
# Host memory of ONNX Runtime stages: bounded (TRTC_MEMORY_LIMIT)
# ----------------------------------------------------------------------------------------------
def _memory_bomb(model: Any) -> None:
    """The graph's output plus 0 x the sum of a 16 GiB ConstantOfShape: a few bytes of ONNX that
    make ONNX Runtime allocate 16 GiB at the first call (issue 21's "bombs")."""
    from onnx import TensorProto, helper

    graph = model.graph
    last = graph.node[-1]
    last.output[0], out = "before_bomb", last.output[0]
    graph.initializer.append(helper.make_tensor("bomb_shape", TensorProto.INT64, [2],
                                                [65536, 65536]))
    graph.node.extend([helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"]),
                       helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=0),
                       helper.make_node("Mul", ["bomb_sum", "bomb_zero"], ["bomb_nothing"]),
                       helper.make_node("Add", ["before_bomb", "bomb_nothing"], [out])])
    graph.initializer.append(helper.make_tensor("bomb_zero", TensorProto.FLOAT, [], [0.0]))


_CALL = """
import json, resource, sys
import numpy as np
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
from trtc.runtime import TrtcError, load
model = load(sys.argv[1], device="cpu")
feeds = {name: np.zeros(spec.shape, spec.dtype) for name, spec in model.inputs.items()}
try:
    model(**feeds)
    print(json.dumps({"error": None}))
except TrtcError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


@pytest.mark.parametrize("how", ["TRTC_MEMORY_LIMIT=512M", "an 8 GiB address-space limit"])
def test_an_onnx_runtime_stage_cannot_take_the_machines_memory(tmp_path: Path, good: Path,
                                                               how: str) -> None:
    """Issue 21 part 7: ONNX edited to make a 16 GiB intermediate was stopped only by the fuzz
    workers' address-space limit (else it takes the machine). ONNX Runtime's host memory is a
    capped arena: the call is one IncompatibleError naming the stage and TRTC_MEMORY_LIMIT, not
    an allocation failure, and nothing near 16 GiB is touched."""
    path = _with_onnx(tmp_path, good, _memory_bomb)
    env = dict(os.environ)
    env.pop("TRTC_MEMORY_LIMIT", None)
    rlimit = 0
    if how.startswith("TRTC"):
        env["TRTC_MEMORY_LIMIT"] = "512M"
    else:
        rlimit = 8 * 2**30
    done = subprocess.run([sys.executable, "-c", _CALL, str(path), str(rlimit)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["error"] == "IncompatibleError", result
    text = result["message"]
    assert "\n" not in text and "stage 'engine0': one tensor needs 16.0 GiB" in text, text
    assert "TRTC_MEMORY_LIMIT=" in text and "Failed to allocate" not in text, text


def test_the_memory_limit_takes_sizes_and_refuses_junk(monkeypatch: pytest.MonkeyPatch) -> None:
    from trtc.runtime import IncompatibleError
    from trtc.runtime.stages.engine_cpu import host_memory_limit

    for text, expected in [("8G", 8 * 2**30), ("512MiB", 512 * 2**20), ("1.5g", 3 * 2**29),
                           ("1048576", 2**20), ("0", None), ("none", None)]:
        monkeypatch.setenv("TRTC_MEMORY_LIMIT", text)
        assert host_memory_limit() == expected, text
    monkeypatch.setenv("TRTC_MEMORY_LIMIT", "lots")
    with pytest.raises(IncompatibleError, match="TRTC_MEMORY_LIMIT='lots' is not a size"):
        host_memory_limit()
    monkeypatch.delenv("TRTC_MEMORY_LIMIT")
    assert host_memory_limit() is None or host_memory_limit() >= 2**20
