"""Contract with the real TensorRT bindings, on the CPU: every TensorRT attribute the GPU path (and
its benchmark) uses exists in the installed ``tensorrt_rtx`` (and ``tensorrt``, when installed),
so a renamed or removed API fails CI here rather than on a user's GPU.

The GPU code names its TensorRT objects by role; this test reads it with ``ast`` and checks
``trt.<X>.<Y>`` chains on the module and ``<role>.<member>`` on the class of each role: a member
the code calls must be a method, one it reads without calling a property. The calls of the
dynamic-shape path (``set_input_shape``, ``get_tensor_shape``, ``get_tensor_profile_shape``,
``set_optimization_profile_async``, ``USER_MANAGED`` contexts sharing memory) have their
signatures checked against what the GPU path passes, as have the refit calls of weight-stripped
engines (``Refitter(engine, logger)``, ``OnnxParserRefitter(refitter, logger)``,
``refit_from_bytes(bytes)``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Dict, List, Set, Tuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "runtime" / "stages" / "engine_cuda.py", ROOT / "benchmarks" / "runtime.py"]
# variable or attribute name -> the TensorRT class of the object it holds
ROLES = {"engine": "ICudaEngine", "context": "IExecutionContext", "runtime": "Runtime",
         "_runtime": "Runtime", "logger": "Logger", "_logger": "Logger",
         "refitter": "Refitter", "parser_refitter": "OnnxParserRefitter",
         "config": "IRuntimeConfig", "runtime_cache": "IRuntimeCache",
         "_runtime_cache": "IRuntimeCache"}
# what the GPU path cannot do without: guards against the scan silently finding nothing
CORE = {("IExecutionContext", "execute_async_v3"), ("IExecutionContext", "set_tensor_address"),
        ("Runtime", "deserialize_cuda_engine"), ("ICudaEngine", "create_execution_context"),
        ("ICudaEngine", "get_tensor_mode"), ("module", "nptype"), ("module", "TensorIOMode"),
        # dynamic shapes (issue 12)
        ("IExecutionContext", "set_input_shape"), ("IExecutionContext", "get_tensor_shape"),
        ("IExecutionContext", "set_optimization_profile_async"),
        ("IExecutionContext", "active_optimization_profile"),
        ("IExecutionContext", "set_device_memory"), ("ICudaEngine", "get_tensor_profile_shape"),
        ("ICudaEngine", "num_optimization_profiles"), ("ICudaEngine", "device_memory_size_v2"),
        ("module", "ExecutionContextAllocationStrategy"),
        # weight-stripped engines refitted at load (issue 15)
        ("module", "Refitter"), ("module", "OnnxParserRefitter"), ("ICudaEngine", "refittable"),
        ("OnnxParserRefitter", "refit_from_bytes"), ("OnnxParserRefitter", "num_errors"),
        ("Refitter", "get_missing_weights"), ("Refitter", "refit_cuda_engine"),
        # TensorRT-RTX's runtime cache and the validity check (issue 23)
        ("ICudaEngine", "create_runtime_config"), ("IRuntimeConfig", "create_runtime_cache"),
        ("IRuntimeConfig", "set_runtime_cache"),
        ("IRuntimeConfig", "set_execution_context_allocation_strategy"),
        ("IRuntimeCache", "deserialize"), ("IRuntimeCache", "serialize"),
        ("Runtime", "get_engine_validity"), ("module", "EngineValidity")}

MODULES = [m for m in ("tensorrt_rtx", "tensorrt") if importlib.util.find_spec(m) is not None]
if not MODULES:
    pytestmark = pytest.mark.skip(reason="neither tensorrt_rtx nor tensorrt is installed")
    MODULES = ["tensorrt_rtx"]  # one (skipped) case per test rather than an empty parameter set


def _chain(node: ast.AST) -> List[str]:
    """``a.b.c`` -> ['a', 'b', 'c']; [] when the root is not a plain name."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return []


def used_api(source: Path) -> Tuple[Set[Tuple[str, ...]], Set[Tuple[str, str, bool]]]:
    """(module attribute chains after ``trt.``, {(class, member, called)} used on role-named
    objects; ``called``: the member is called, not only read)."""
    tree = ast.parse(source.read_text(), str(source))
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    module_chains: Set[Tuple[str, ...]] = set()
    members: Set[Tuple[str, str, bool]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _chain(node)
        if len(chain) >= 2 and chain[0] == "trt":
            module_chains.add(tuple(chain[1:]))
        holder = node.value
        role = holder.id if isinstance(holder, ast.Name) else getattr(holder, "attr", None)
        if role in ROLES:
            members.add((ROLES[role], node.attr, id(node) in called))
    # keep only maximal chains: trt.Logger.ERROR implies trt.Logger
    module_chains = {c for c in module_chains
                     if not any(o[:len(c)] == c and len(o) > len(c) for o in module_chains)}
    return module_chains, members


def _all_used() -> Tuple[Set[Tuple[str, ...]], Set[Tuple[str, str, bool]]]:
    chains: Set[Tuple[str, ...]] = set()
    members: Set[Tuple[str, str, bool]] = set()
    for source in SOURCES:
        c, m = used_api(source)
        chains |= c
        members |= m
    return chains, members


def test_the_scan_finds_the_core_api():
    chains, members = _all_used()
    found = {(cls, member) for cls, member, _ in members} | {("module", c[0]) for c in chains}
    assert CORE <= found, f"not found in the sources: {sorted(CORE - found)}"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_used_attribute_exists(module_name):
    trt = importlib.import_module(module_name)
    chains, members = _all_used()
    missing = []
    for chain in sorted(chains):
        obj = trt
        for part in chain:
            if not hasattr(obj, part):
                missing.append("trt." + ".".join(chain))
                break
            obj = getattr(obj, part)
    for cls, member, called in sorted(members):
        if not hasattr(getattr(trt, cls), member):
            missing.append(f"{cls}.{member}")
            continue
        is_property = isinstance(inspect.getattr_static(getattr(trt, cls), member), property)
        if called and is_property:
            missing.append(f"{cls}.{member}() (a property, not a method)")
        elif not called and not is_property:
            missing.append(f"{cls}.{member} as a value (it is a method: call it)")
    assert not missing, f"{module_name} {trt.__version__} lacks: {', '.join(missing)}"


def _first_signature(method: object) -> str:
    return (inspect.getdoc(method) or "").splitlines()[0]


def _signatures(method: object) -> List[str]:
    """Every ``name(self: ..., ...) -> ...`` line of a pybind11 docstring (one per overload)."""
    lines = (inspect.getdoc(method) or "").splitlines()
    name = getattr(method, "__name__", "")
    return [line.split(". ", 1)[-1] if line[:1].isdigit() else line
            for line in lines if f"{name}(self" in line]


@pytest.mark.parametrize("module_name", MODULES)
def test_call_shapes(module_name):
    """The calls take what the GPU path passes: a stream handle int, a name and an address."""
    trt = importlib.import_module(module_name)
    execute = _first_signature(trt.IExecutionContext.execute_async_v3)
    assert execute.startswith("execute_async_v3(self") and execute.count(":") == 2, execute
    assert "int" in execute.lower()
    address = _first_signature(trt.IExecutionContext.set_tensor_address)
    assert "name: str" in address and address.count(":") == 3, address
    assert trt.TensorIOMode.INPUT != trt.TensorIOMode.OUTPUT


@pytest.mark.parametrize("module_name", MODULES)
def test_nptype_covers_bundle_dtypes(module_name):
    trt = importlib.import_module(module_name)
    expected: Dict[str, str] = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32",
                                "INT64": "int64", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}
    for member, dtype in expected.items():
        assert np.dtype(trt.nptype(getattr(trt.DataType, member))) == np.dtype(dtype), member


@pytest.mark.parametrize("module_name", MODULES)
def test_logger_and_runtime_construct(module_name):
    trt = importlib.import_module(module_name)
    logger = trt.Logger(trt.Logger.ERROR)
    runtime = trt.Runtime(logger)
    assert callable(runtime.deserialize_cuda_engine)


@pytest.mark.parametrize("module_name", MODULES)
def test_dynamic_shape_call_shapes(module_name):
    """The dynamic-shape calls take what the GPU path passes (engine_cuda.TensorRTStage)."""
    trt = importlib.import_module(module_name)
    context, engine = trt.IExecutionContext, trt.ICudaEngine
    # set_input_shape(name, shape): the GPU path passes a tuple of ints
    assert any("name: str" in sig and "shape: tuple" in sig and sig.endswith("-> bool")
               for sig in _signatures(context.set_input_shape)), _signatures(context.set_input_shape)
    # get_tensor_shape(name) -> Dims, which tuple() turns into ints (-1 for a dynamic axis)
    (shape,) = _signatures(context.get_tensor_shape)
    assert "name: str" in shape and shape.count(":") == 2 and shape.endswith("Dims"), shape
    assert tuple(trt.Dims([-1, 3, 16, 16])) == (-1, 3, 16, 16)
    assert all(type(d) is int for d in trt.Dims([2, 3]))
    # set_optimization_profile_async(profile_index, stream_handle) -> bool
    (profile,) = _signatures(context.set_optimization_profile_async)
    assert "profile_index" in profile and "stream_handle" in profile and profile.count(":") == 3
    assert profile.endswith("-> bool"), profile
    # get_tensor_profile_shape(name, profile_index) -> [min, opt, max] Dims
    (ranges,) = _signatures(engine.get_tensor_profile_shape)
    assert "name: str" in ranges and "profile_index" in ranges and "Dims]" in ranges, ranges
    # create_execution_context(strategy) and set_device_memory(address, size) for shared scratch
    assert any("strategy:" in sig and "ExecutionContextAllocationStrategy" in sig
               for sig in _signatures(engine.create_execution_context))
    (memory,) = _signatures(context.set_device_memory)
    assert "memory:" in memory and "size:" in memory and memory.count(":") == 3, memory
    strategies = trt.ExecutionContextAllocationStrategy
    assert strategies.USER_MANAGED != strategies.STATIC
    for owner, name in [(engine, "num_optimization_profiles"), (engine, "device_memory_size_v2"),
                        (context, "active_optimization_profile")]:
        assert isinstance(inspect.getattr_static(owner, name), property), name


@pytest.mark.parametrize("module_name", MODULES)
def test_refit_call_shapes(module_name):
    """The refit of a weight-stripped engine (engine_cuda._refit) passes what the bindings take:
    ``Refitter(engine, logger)``, ``OnnxParserRefitter(refitter, logger)``, the ONNX as bytes,
    and reads back the names of missing weights as a list of str."""
    trt = importlib.import_module(module_name)
    (make_refitter,) = _signatures(trt.Refitter.__init__)
    assert "engine:" in make_refitter and "logger:" in make_refitter, make_refitter
    (make_parser,) = _signatures(trt.OnnxParserRefitter.__init__)
    assert "refitter:" in make_parser and "logger:" in make_parser, make_parser
    (from_bytes,) = _signatures(trt.OnnxParserRefitter.refit_from_bytes)
    assert "model:" in from_bytes and from_bytes.endswith("-> bool"), from_bytes
    (missing,) = _signatures(trt.Refitter.get_missing_weights)
    assert missing.endswith("-> list[str]"), missing
    (refit,) = _signatures(trt.Refitter.refit_cuda_engine)
    assert refit.endswith("-> bool"), refit
    (error,) = _signatures(trt.OnnxParserRefitter.get_error)
    assert callable(getattr(getattr(trt, error.rsplit(".", 1)[-1], trt.ParserError), "desc"))
    # a Refitter of no engine is refused by the bindings themselves (no GPU needed to see that)
    with pytest.raises(TypeError):
        trt.Refitter(None, trt.Logger(trt.Logger.ERROR))
    for flag in ("STRIP_PLAN", "REFIT_IDENTICAL"):  # the build side of stripping (_trt.py)
        assert hasattr(trt.BuilderFlag, flag), flag
