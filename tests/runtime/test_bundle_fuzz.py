"""Property: whatever is done to a real bundle's bytes, manifest or members, loading it on the CPU
path either works or raises one of trtc's own errors (a TrtcError subclass with a one-line message);
and a model that loads runs, or raises a TrtcError. Never another exception, never a crash.

Set TRTC_FUZZ_SCALE=10 (say) for a longer soak run. The bundle fuzzed is the tiny two-input model
compiled with BatchNorm kept in MXNet, so it holds every kind of member: engine plans, their ONNX,
a residual MXNet symbol and residual params (.npz). The CI budget: about 1,500 cases in well under
a minute on two idle cores.

The hypothesis tests below run in this process (400 examples each). ``benchmarks/fuzz.py``'s
generator adds structured edits of every member kind with the checksums recomputed (param shapes
and dtypes, symbol ops and inputs, ONNX ops, subgraphs and weights, manifest fields) and issue 21's
crafted classes (ONNX external data pointing at a secret file, hostile residual symbols, resource
bombs, signed bundles with a replaced plan), run in child processes so that a segfault or a hang
is counted instead of ending the run: 288 of its cases here; 10,000 and ``trtc compile`` mistakes
with ``python benchmarks/fuzz.py`` (README: Bundle fuzzing).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_surgery import manifest_of, members_of, repack, write_members
from models import tiny
from trtc.runtime import TrtcError, load

SCALE = float(os.environ.get("TRTC_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(400 * SCALE), deadline=2000, derandomize=False, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE_NAMES = ["../escape.plan", "/etc/passwd", "engines/../../x", "C:\\\\win.plan", "",
                 "engines/", "a/./b", "manifest.json", "trtc-bundle", "x" * 300,
                 "engines/\x00.plan", ".hidden", "onnx/engine0.onnx ", "ünïcode.plan"]


class Original(dict):
    """The bundle under test (a dict with a short repr, for hypothesis's failure reports)."""

    def __repr__(self) -> str:
        return f"<bundle {self['path'].name}>"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    path = tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))
    members = members_of(path)
    load(path, device="cpu")  # imports MXNet and ONNX Runtime once, outside any deadline
    return Original(path=path, bytes=path.read_bytes(), members=members,
                    manifest=manifest_of(members), feeds=tiny.random_feeds("pair"),
                    dir=tmp_path_factory.mktemp("fuzz"))


def _check_load(original: Dict[str, Any], data: bytes) -> None:
    path: Path = original["dir"] / "case.trtb"
    path.write_bytes(data)
    try:
        model = load(path, device="cpu")
    except TrtcError as exc:
        _check_message(exc)
        return
    try:
        outputs = model(**original["feeds"])
    except TrtcError as exc:
        _check_message(exc)
        return
    assert set(outputs) == set(model.outputs)
    for name, value in outputs.items():
        assert isinstance(value, np.ndarray) and value.shape == model.outputs[name].shape


def _check_message(exc: TrtcError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


# ----------------------------------------------------------------------------------------------
# Byte mutations of the whole file: flips, truncations, insertions, deletions, overwrites.
# ----------------------------------------------------------------------------------------------
def _mutate_bytes(data: bytes, draw: Any, rounds: int) -> bytes:
    buf = bytearray(data)
    for _ in range(rounds):
        if not buf:
            break
        # Bias positions to the ends: local headers and the manifest at the start, the central
        # directory at the end; the middle is engine bytes guarded by sha256.
        where = draw(st.sampled_from(["head", "tail", "any"]))
        n = len(buf)
        lo, hi = {"head": (0, min(n, 6000)), "tail": (max(0, n - 2000), n), "any": (0, n)}[where]
        pos = draw(st.integers(lo, max(lo, hi - 1)))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "zero"]))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 64))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            buf[pos:pos + len(chunk)] = chunk
        else:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 0xFF, 0x7F]))
            buf[pos:pos + width] = bytes([value]) * width
    return bytes(buf)


@FUZZ
@given(data=st.data())
def test_byte_mutations_give_trtc_errors(original: Dict[str, Any], data: Any) -> None:
    rounds = data.draw(st.integers(1, 4))
    _check_load(original, _mutate_bytes(original["bytes"], data.draw, rounds))


# ----------------------------------------------------------------------------------------------
# Structured mutations of JSON (the manifest, a residual symbol), re-packed into a valid zip.
# ----------------------------------------------------------------------------------------------
def _paths(value: Any, prefix: Tuple = ()) -> List[Tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, prefix + (i,))
    return found


def _strings(value: Any) -> List[str]:
    return [v for p in _paths(value) for v in [_get(value, p)] if isinstance(v, str)] + \
        [p[-1] for p in _paths(value) if p and isinstance(p[-1], str)]


def _get(value: Any, path: Tuple) -> Any:
    for key in path:
        value = value[key]
    return value


json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 3, 2**31 - 1, 2**31, 2**40, 2**63, -(2**63), 10**30]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "..", "../x", "/etc/passwd", "float32", "float64", "int8", "bool",
                     "engine", "residual", "tensorrt", "tensorrt_rtx", "0.0", "fp16", "9.0",
                     "trtc-bundle", "arg:x", "aux:", "x" * 2000, "a\nb"]),
    st.text(max_size=12),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _mutate_json(doc: Any, draw: Any) -> Any:
    doc = copy.deepcopy(doc)
    names = sorted(set(_strings(doc)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))  # paths of the document as mutated so far
        op = draw(st.sampled_from(["replace", "replace", "delete", "name", "int", "dup", "add"]))
        if not path:
            if op == "replace":
                doc = draw(json_values)
            continue
        try:
            parent, key = _get(doc, path[:-1]), path[-1]
            current = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "name" and names:
            parent[key] = draw(st.sampled_from(names))
        elif op == "int" and isinstance(current, int):
            parent[key] = current + draw(st.sampled_from([1, -1, 2**31, -current, 7]))
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(current))
        elif op == "add" and isinstance(current, dict):
            current[draw(st.sampled_from(names + ["extra"]))] = draw(json_values)
    return doc


@FUZZ
@given(data=st.data())
def test_manifest_mutations_give_trtc_errors(original: Dict[str, Any], data: Any) -> None:
    manifest = _mutate_json(original["manifest"], data.draw)
    fix = data.draw(st.booleans())
    _check_load(original, repack(original["members"], manifest, fix_checksums=fix))


# ----------------------------------------------------------------------------------------------
# Member mutations: contents changed with checksums recomputed (so ORT, MXNet and numpy see
# hostile bytes), members renamed, dropped, duplicated, reordered or compressed.
# ----------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=int(400 * SCALE))
@given(data=st.data())
def test_member_mutations_give_trtc_errors(original: Dict[str, Any], data: Any) -> None:
    members = list(original["members"])
    manifest = copy.deepcopy(original["manifest"])
    names = [n for n, _ in members]
    op = data.draw(st.sampled_from(["content", "content", "json", "rename", "drop", "dup",
                                    "reorder", "compress", "extra"]))
    index = data.draw(st.integers(0, len(members) - 1))
    name, body = members[index]
    if op == "content":
        members[index] = (name, _mutate_bytes(body, data.draw, data.draw(st.integers(1, 3))))
    elif op == "json" and name.endswith(".json") and name != "manifest.json":
        doc = _mutate_json(json.loads(body), data.draw)
        members[index] = (name, json.dumps(doc).encode())
    elif op == "rename":
        new = data.draw(st.sampled_from(HOSTILE_NAMES + names))
        members[index] = (new, body)
        if data.draw(st.booleans()) and name in manifest["members"]:  # keep the table in step
            manifest["members"][new] = manifest["members"].pop(name)
    elif op == "drop":
        del members[index]
    elif op == "dup":
        members.insert(data.draw(st.integers(0, len(members))), (name, body))
    elif op == "reorder":
        members = data.draw(st.permutations(members))
    elif op == "extra":
        members.append((data.draw(st.sampled_from(["extra.bin", "engines/x.plan"] + HOSTILE_NAMES)),
                        data.draw(st.binary(max_size=64))))
    fix = data.draw(st.booleans()) or op in ("content", "json")
    if op == "compress":
        _check_load(original, write_members(members, compress=True))
    else:
        _check_load(original, repack(members, manifest, fix_checksums=fix))


# ----------------------------------------------------------------------------------------------
# benchmarks/fuzz.py's generator: structured, recomputed-checksum edits of every member kind, and
# the crafted classes of issue 21's probe, each case in a child process (a crash is counted, not
# fatal).
# ----------------------------------------------------------------------------------------------
def _fuzz_module() -> Any:
    import importlib.util
    import sys

    if "trtc_fuzz_benchmark" in sys.modules:
        return sys.modules["trtc_fuzz_benchmark"]
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("trtc_fuzz_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["trtc_fuzz_benchmark"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """fuzz.prepare's bundles (the base, its dynamic twin, the exported model), in a directory
    the CLI test reuses as --out."""
    return _fuzz_module().prepare(tmp_path_factory.mktemp("fuzz-bases"))


def test_generated_cases_never_crash(bases: Dict[str, Path]) -> None:
    """288 cases in one run, 24 of each kind (TRTC_FUZZ_SCALE=35: 10,080), smaller bombs
    (--light). Mutations: refused, or loaded (identical or, for an edit that makes another valid
    model, different outputs). Issue 21's crafted classes: ONNX tensors stored in a secret file
    (relative, ../, absolute, through a symlink; dense, Constant, sparse, attributes) are all
    refused and nothing reads the secret; hostile residual symbols (zero/negative conv and
    pooling attributes, index ops with indices out of range) are refused or run, never crash nor
    give two answers; signed bundles with a replaced plan are all refused; resource bombs never
    crash nor hang, and a batch-1 call of a bundle declaring a huge max batch does not allocate
    for it. Never a byte on stdout. No bomb is stopped only by the workers' address-space limit
    (an "OOM"): huge ONNX intermediates, which the per-call estimate does not see, hit the
    runtime's capped ONNX Runtime arena (TRTC_MEMORY_LIMIT) and are refused with one line."""
    fuzz = _fuzz_module()
    cases = int(288 * SCALE)
    results = fuzz.run_cases(bases, 0, fuzz.case_ids(cases), workers=2, timeout=120, light=True)
    summary = fuzz.summarize(results)
    counts = summary["counts"]
    for outcome in ("crashed", "hang", "file read", "stdout"):
        assert counts["all"][outcome] == 0, (outcome, summary["crashes"][:5])
    for kind in fuzz.KINDS:
        assert sum(counts[kind][o] for o in fuzz.OUTCOMES) >= cases // len(fuzz.KINDS), kind
    assert counts["all"]["refused"] > 100 and counts["all"]["identical"] > 0
    assert counts["params"]["different"] > 0  # weights edited with the checksums recomputed
    assert counts["plan"]["refused"] == counts["plan"]["different"] == 0  # the CPU path
    # never reads the plans: an edited plan with its checksums recomputed goes unnoticed there,
    # unless the bundle is signed and loaded with trusted_keys:
    for kind in ("external", "signed"):  # every one refused
        assert counts[kind]["refused"] == sum(counts[kind][o] for o in fuzz.OUTCOMES), kind
    assert counts["hostile"]["refused"] > 0 and counts["bombs"]["refused"] > 0
    assert counts["bombs"]["identical"] > 0  # the huge max batch, the stages under the bound
    assert summary["rss_growth_mb"]["bombs"] < 1024
    # resource bombs are stopped by the runtime's own bounds (TRTC_MEMORY_LIMIT's capped arena
    # for what runs inside an ONNX Runtime stage), never by the workers' address-space limit
    oom = sorted({r["what"] for r in summary["crashes"] if r["outcome"] == "OOM"})
    assert counts["all"]["OOM"] == 0, oom[:4]


def test_the_external_data_cases_read_the_secret_without_the_onnx_check(
        bases: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file-read detector itself: with runtime/onnx_check.py's check switched off, ONNX
    Runtime does read the secret for every place the check refuses it (dense and sparse
    initializers, Constant.value, Constant.sparse_value, a raw_data tensor also marked external;
    relative and ../ paths), and the case says 'file read'. (ONNX Runtime itself refuses absolute
    paths and symlinks out of the directory.)"""
    import trtc.runtime.stages.engine_cpu as engine_cpu

    fuzz = _fuzz_module()
    monkeypatch.setattr(engine_cpu, "check_onnx", lambda data: None)
    monkeypatch.chdir(tmp_path)  # the Runner makes its work directory the cwd
    work = tmp_path / "work"
    work.mkdir()
    runner = fuzz.Runner(bases, work)
    try:
        name = fuzz._last_onnx(runner.base)
        relative, _, _, parent = fuzz.external_locations(runner.work)[:4]
        for place in ("initializer", "Constant.value", "sparse initializer",
                      "Constant.sparse_value", "raw_data too"):
            for location in (relative, parent):
                case = fuzz.external_case(runner.base, name, place, location, 0)
                result = fuzz.run_case(runner, case, runner.work / "case.trtb")
                assert result["outcome"] == "file read", (place, location, result)
    finally:
        runner.close()


def test_the_fuzz_benchmark_runs_as_users_run_it(bases: Dict[str, Path]) -> None:
    import subprocess
    import sys

    fuzz = _fuzz_module()
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"
    done = subprocess.run([sys.executable, str(script), "--cases", "12", "--workers", "1",
                           "--light", "--compile-cases", "1", "--json",
                           "--out", str(bases["bundle"].parent)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["cases"] == 13 and summary["counts"]["all"]["crashed"] == 0
    assert set(summary["counts"]) == {*fuzz.ALL_KINDS, "all"}
    assert summary["counts"]["compile"]["crashed"] == summary["counts"]["compile"]["hang"] == 0
