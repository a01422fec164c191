"""`trtc inspect`: a bundle's manifest as text, JSON, or a picture of the partitioned graph."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from .runtime.bundle import Bundle, execution_paths, shape_text
from .runtime.errors import BundleError, UsageError
from .runtime.signing import signature_info

__all__ = ["summary_json", "summary_text", "graph_dot", "render_graph"]

_EXECUTOR = {"engine": "TensorRT", "onnx": "ONNX Runtime", "residual": "MXNet"}
_ENGINE_KEYS = ("backend", "backend_version", "precision", "compute_capabilities", "bytes", "sha256")


def summary_json(bundle: Bundle) -> Dict[str, Any]:
    """The manifest fields pipelines read (a stable subset)."""
    m = bundle.manifest
    stages = []
    for s in m["stages"]:
        entry = {"kind": s["kind"], "name": s["name"], "inputs": s["inputs"], "outputs": s["outputs"],
                 "mxnet_ops": s.get("mxnet_ops")}
        entry["executor"] = _EXECUTOR.get(s["kind"], s["kind"])
        if s["kind"] == "engine":
            entry.update({k: s[k] for k in _ENGINE_KEYS if k in s})
        elif s["kind"] == "residual":
            entry["params"] = len(s["params"])
        stages.append(entry)
    return {
        "format_version": m["format_version"],
        "trtc_version": m["trtc_version"],
        "precision": m["precision"],
        "source": m["source"],
        "inputs": m["inputs"],
        "outputs": m["outputs"],
        "stages": stages,
        "paths": execution_paths(m),
        "weight_bytes": _weight_copies(m),
        "engine_weights": "stripped" if _stripped(m) else "included",
        "requires": m["requires"],
        # False: compiled with --no-verify; None: a bundle from before the field existed
        "verified": m.get("verified"),
        "bundle_bytes": bundle.size,
        "members": {k: v["bytes"] for k, v in m["members"].items()},
        # Who the signature says signed it; checked only by `trtc verify` / load(trusted_keys=).
        "signature": signature_info(bundle),
    }


def _shape(spec: Dict[str, Any]) -> str:
    """``data 1..32x3x224x224 float32 (opt 8x3x224x224)`` for a ranged tensor."""
    opt = spec.get("opt_shape")
    dynamic = (spec.get("min_shape") or spec["shape"]) != (spec.get("max_shape") or spec["shape"])
    return (f"{spec['name']} {shape_text(spec)} {spec['dtype']}"
            + (f" (opt {'x'.join(map(str, opt))})" if opt and dynamic else ""))


def _weight_copies(m: Dict[str, Any]) -> Dict[str, int]:
    """Bytes per copy of the weights: engine plans (GPU path), ONNX (CPU path), residual params."""
    members = m["members"]
    plans = sum(members[s["engine"]]["bytes"] for s in m["stages"] if s["kind"] == "engine" and "engine" in s)
    onnx = sum(members[s["onnx"]]["bytes"] for s in m["stages"] if s["kind"] == "engine" and "onnx" in s)
    residual = members[m["residual_params"]]["bytes"] if m.get("residual_params") else 0
    return {"gpu": plans, "cpu": onnx, "residual": residual}


def members_mb(m: Dict[str, Any], member: str) -> str:
    return f"{m['members'][member]['bytes'] / 1e6:.1f} MB"


def _stripped(m: Dict[str, Any]) -> bool:
    """Are the engines weight-stripped (refitted from their ONNX at load)?"""
    engines = [s for s in m["stages"] if s["kind"] == "engine" and "engine" in s]
    return bool(engines) and all(s.get("weights") == "stripped" for s in engines)


def summary_text(bundle: Bundle) -> str:
    m = bundle.manifest
    engines = [s for s in m["stages"] if s["kind"] == "engine"]
    lines = [
        f"{bundle.path}: trtc bundle format v{m['format_version']} (trtc {m['trtc_version']}), "
        f"{bundle.size / 1e6:.1f} MB, {m['precision']}",
        f"source: {m['source']['symbol']['file']} (sha256 {m['source']['symbol']['sha256'][:12]}), "
        f"{m['source']['params']['file']} (sha256 {m['source']['params']['sha256'][:12]})",
        "inputs:  " + "; ".join(_shape(s) for s in m["inputs"]),
        "outputs: " + "; ".join(_shape(s) for s in m["outputs"]),
        f"stages ({len(engines)} engine, "
        f"{sum(s['kind'] == 'onnx' for s in m['stages'])} ONNX Runtime, "
        f"{sum(s['kind'] == 'residual' for s in m['stages'])} MXNet):",
    ]
    paths = execution_paths(m)
    copies = _weight_copies(m)
    stripped = _stripped(m)
    kinds = {"gpu": "weight-stripped engine plans" if stripped else "engine plans",
             "cpu": "ONNX for ONNX Runtime"}
    lines.insert(4, "paths:   " + ", ".join(
        f"{p} ({kinds[p]}, {copies[p] / 1e6:.1f} MB)" for p in paths)
        + (f"; residual MXNet params {copies['residual'] / 1e6:.1f} MB" if copies["residual"] else ""))
    if stripped:
        weights = (f"stored once, in the ONNX ({copies['cpu'] / 1e6:.1f} MB): the GPU path refits "
                   "the engines from it at load")
    elif paths == ["cpu", "gpu"]:
        weights = (f"stored twice, in the plans and the ONNX; --target gpu|cpu or --strip-weights "
                   "store them once")
    else:
        weights = f"stored once ({paths[0]} path only)"
    lines.insert(5, f"weights: {weights}")
    for s in m["stages"]:
        if s["kind"] == "engine" and "backend" in s:
            detail = (f"{s['backend']} {s['backend_version']} {s['precision']}, "
                      f"{s['bytes'] / 1e6:.1f} MB, CC {','.join(s['compute_capabilities']) or '?'}"
                      + (", weight-stripped" if s.get("weights") == "stripped" else ""))
        elif s["kind"] == "engine":
            detail = f"ONNX Runtime only (--target cpu), {s['precision']}"
        elif s["kind"] == "onnx":
            detail = f"ONNX Runtime on every path, {members_mb(m, s['onnx'])}"
        else:
            detail = f"MXNet, {len(s['params'])} params"
        lines.append(f"  {s['name']:<12} {s['kind']:<8} {s.get('mxnet_ops', '?'):>5} ops  {detail}")
        if s["kind"] != "engine":
            ops = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in s.get("op_types", {}).items())
            lines.append(f"      ops: {ops[:200]}")
        lines.append(f"      in: {', '.join(t['name'] for t in s['inputs'])}")
        lines.append(f"      out: {', '.join(t['name'] for t in s['outputs'])}")
    req = m["requires"]
    needs = ["numpy"] + (["onnxruntime (CPU path)"] if "cpu" in paths else [])
    if req.get("gpu_path"):
        needs.append(" or ".join(req["gpu_path"]) + " + cuda-python (GPU path)")
    if req.get("mxnet"):
        ops = req.get("mxnet_ops") or sorted({op for s in m["stages"] if s["kind"] == "residual"
                                              for op in s.get("op_types", {})})
        needs.append(f"mxnet {req.get('mxnet_version', '')}".strip() + " for the MXNet stages ("
                     + ", ".join(ops[:6]) + (", ..." if len(ops) > 6 else "")
                     + "): Python <= 3.11 with numpy < 1.24")
    else:
        needs.append("no MXNet")
    if req.get("custom_ops"):
        needs.append("MXNet custom ops registered: " + ", ".join(req["custom_ops"]))
    lines.append("needs: " + "; ".join(needs))
    if m.get("verified") is False:
        lines.append("verified: NO — compiled with --no-verify, never compared with MXNet")
    lines.append("signature: " + _signature_text(bundle))
    return "\n".join(lines)


def _signature_text(bundle: Bundle) -> str:
    info = signature_info(bundle)
    if info is None:
        return ("none (checksums catch accidental damage only; `trtc sign` adds an Ed25519 "
                "signature)")
    if "error" in info:
        return f"present but unreadable: {info['error']}"
    return (f"{info['algorithm']} key {info['key_fingerprint']} (not checked here: "
            "trtc verify BUNDLE --key PUBLIC.pem)")


def _dot_id(text: str) -> str:
    return json.dumps(text)


def graph_dot(bundle: Bundle) -> str:
    """Graphviz DOT of the partitioned graph: each engine one node labelled with its op count,
    each residual MXNet op itself, edges along tensors.

    Raises:
        BundleError: a residual stage's symbol does not describe the graph the manifest does.
    """
    try:
        return _graph_dot(bundle)
    # ValueError: bad JSON/UTF-8; RecursionError: JSON nested deeper than Python's stack
    except (KeyError, IndexError, TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{bundle.path}: a residual stage's symbol is malformed or does not "
                          f"match the manifest ({type(exc).__name__}: {str(exc)[:80]}); compile "
                          "the bundle again") from None


def _graph_dot(bundle: Bundle) -> str:
    m = bundle.manifest
    producer: Dict[str, str] = {}
    lines = ["digraph trtc {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for spec in m["inputs"]:
        node = f"input:{spec['name']}"
        producer[spec["name"]] = node
        lines.append(f"  {_dot_id(node)} [shape=ellipse, label={_dot_id(_shape(spec))}];")
    edges: List[str] = []
    for stage in m["stages"]:
        if stage["kind"] in ("engine", "onnx"):
            node = f"stage:{stage['name']}"
            top = sorted(stage.get("op_types", {}).items(), key=lambda kv: -kv[1])[:3]
            what = (f"TensorRT {stage['precision']}" if stage["kind"] == "engine"
                    else "ONNX Runtime")
            label = (f"{stage['name']}\\n{what}\\n{stage.get('mxnet_ops', '?')} "
                     f"ops\\n" + ", ".join(f"{k} x{v}" for k, v in top))
            color = "#76b900" if stage["kind"] == "engine" else "#4a6fa5"
            lines.append(f"  {_dot_id(node)} [shape=box, style=\"filled,rounded\", "
                         f"fillcolor=\"{color}\", fontcolor=white, label=\"{label}\"];")
            for spec in stage["inputs"]:
                edges.append(f"  {_dot_id(producer[spec['name']])} -> {_dot_id(node)};")
            for spec in stage["outputs"]:
                producer[spec["name"]] = node
        else:
            symbol = json.loads(bundle.read_member(stage["symbol"]).decode("utf-8"))
            nodes = symbol["nodes"]
            inputs = {s["name"] for s in stage["inputs"]}
            local: Dict[int, str] = {}
            for i, n in enumerate(nodes):
                if n["op"] == "null":
                    if n["name"] in inputs:
                        local[i] = producer[n["name"]]
                    continue
                node = f"{stage['name']}:{n['name']}"
                local[i] = node
                lines.append(f"  {_dot_id(node)} [shape=box, style=filled, fillcolor=\"#dddddd\", "
                             f"label={_dot_id(n['op'] + chr(10) + n['name'])}];")
                for src, _, *_rest in n["inputs"]:
                    if src in local:
                        edges.append(f"  {_dot_id(local[src])} -> {_dot_id(node)};")
            for spec, head in zip(stage["outputs"], symbol["heads"]):
                producer[spec["name"]] = local[head[0]]
    for spec in m["outputs"]:
        node = f"output:{spec['name']}"
        lines.append(f"  {_dot_id(node)} [shape=ellipse, label={_dot_id(_shape(spec))}];")
        edges.append(f"  {_dot_id(producer[spec['name']])} -> {_dot_id(node)};")
    seen = set()
    for edge in edges:
        if edge not in seen:
            seen.add(edge)
            lines.append(edge)
    lines.append("}")
    return "\n".join(lines)


def _dot_program() -> List[str]:
    import os
    import sys

    # PATH first, then the running interpreter's bin dir (pip-installed console scripts).
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    for program, extra in (("dot", []), ("graphviz-pure", ["-Kdot"])):
        found = shutil.which(program, path=search)
        if found:
            return [found] + extra
    raise UsageError("drawing needs Graphviz's `dot` program: apt-get install graphviz (or "
                     "brew install graphviz, or pip install graphviz-pure)")


def render_graph(bundle: Bundle, path: Path) -> None:
    """Write the partitioned graph to ``path`` (.svg or .png; .dot writes the source)."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("svg", "png", "dot"):
        raise UsageError(f"--graph {path}: use a .svg, .png or .dot file name")
    if not path.parent.exists() and str(path.parent) not in ("", "."):
        raise UsageError(f"--graph {path}: directory {path.parent} does not exist")
    source = graph_dot(bundle)
    if suffix == "dot":
        path.write_text(source)
        return
    command = _dot_program() + [f"-T{suffix}"]
    proc = subprocess.run(command, input=source.encode(), capture_output=True, timeout=300)
    if proc.returncode != 0 or not proc.stdout:
        raise UsageError(f"{command[0]} failed to draw the graph: "
                         f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    path.write_bytes(proc.stdout)
