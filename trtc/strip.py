"""Weight-stripped engines: every weight stored once (``--strip-weights``, ``trtc strip``).

A bundle for both paths holds each engine's weights twice: inside the plan and as the initializers
of the ONNX the CPU path runs. Stripping rebuilds each engine from that same ONNX with
``STRIP_PLAN`` + ``REFIT_IDENTICAL``: the plan keeps its kernels and graph but no weights, and the
GPU path refits them at load from the bundle's ONNX (``Refitter`` + ``OnnxParserRefitter``, every
weight accounted for before the first call; runtime/stages/engine_cuda.py). The ONNX is unchanged,
so what the accuracy gate verified on the CPU path is what the refitted engine computes.

Used at the end of ``trtc compile --strip-weights`` (after the gate) and by ``trtc strip``, which
strips an existing bundle (or adds stripped engines to a ``--target cpu`` one) without MXNet: a
release pipeline can compile on a CPU-only runner and strip on any machine with a GPU.

TensorRT-RTX builds weight-stripped engines only with an NVIDIA GPU present (any GPU, even one it
cannot run engines on); :func:`check_can_strip` probes the builder and says so in one line.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .runtime import bundle as bundle_format
from .runtime._native import quiet_native
from .runtime.errors import CompileError, UsageError

__all__ = ["check_can_strip", "check_strippable", "strip_engines", "strip_bundle", "StrippedEngine"]

Say = Callable[[str], None]


@dataclass
class StrippedEngine:
    """One engine rebuilt weight-stripped: its plan's bytes before (0 when the bundle had no
    engine: a ``--target cpu`` bundle) and after."""

    stage: str
    before: int
    after: int
    seconds: float

    def to_json(self) -> Dict[str, Any]:
        return {"stage": self.stage, "plan_bytes_before": self.before, "plan_bytes": self.after,
                "seconds": round(self.seconds, 2)}


def check_can_strip(backend: Any, command: str = "--strip-weights") -> None:
    """Raise UsageError (one line) unless ``backend`` can build weight-stripped engines here."""
    reason = backend.strip_unavailable_reason()
    if reason:
        if command == "--strip-weights":
            advice = ("compile on a machine with an NVIDIA GPU, or compile here with --target "
                      "all or cpu and run `trtc strip BUNDLE -o OUT` on one (no MXNet needed); "
                      "without stripping, --target gpu or cpu also store each weight once")
        else:
            advice = ("run it on a machine with an NVIDIA GPU and the same builder (any GPU: "
                      "the engines need not run on it)")
        raise UsageError(f"{command}: {reason}; {advice}")


def check_strippable(manifest: Dict[str, Any]) -> None:
    """Raise UsageError unless every engine stage of ``manifest`` has the ONNX to refit from."""
    engines = [s for s in manifest["stages"] if s["kind"] == "engine"]
    if not engines:
        raise UsageError("the bundle has no engine stage: nothing to strip")
    for stage in engines:
        if "onnx" not in stage:
            raise UsageError(f"engine '{stage['name']}' has no ONNX to refit from (compiled "
                             "with --target gpu); strip a bundle compiled with --target all or "
                             "--target cpu instead")


def strip_engines(manifest: Dict[str, Any], members: Dict[str, bytes], backend: Any,
                  say: Say, compute_capabilities: Sequence[str] = ()
                  ) -> Tuple[Dict[str, Any], Dict[str, bytes], List[StrippedEngine]]:
    """Rebuild every engine stage of a bundle weight-stripped from its ONNX member.

    Args:
        manifest: the bundle's manifest (not modified; a changed copy is returned).
        members: member name -> bytes (not modified).
        backend: the build backend (trtc.backends); must be the flavor and version the bundle's
            engines were built with.
        say: progress, one line per engine.
        compute_capabilities: targets for stages that have no engine yet (``--target cpu``
            bundles); a stage with an engine keeps its own.

    Returns:
        (manifest, members, one StrippedEngine per engine stage).
    """
    import time

    from .backends import BuildError

    manifest = copy.deepcopy(manifest)
    manifest.pop("members", None)
    members = dict(members)
    results: List[StrippedEngine] = []
    check_strippable(manifest)
    for stage in manifest["stages"]:
        if stage["kind"] != "engine":
            continue
        name = stage["name"]
        if "backend" in stage and (stage["backend"], stage["backend_version"]) != (backend.name,
                                                                                   backend.version):
            raise UsageError(f"engine '{name}' was built with {stage['backend']} "
                             f"{stage['backend_version']}, this builder is {backend.name} "
                             f"{backend.version}; strip with the builder that built it "
                             f"(pip install {stage['backend'].replace('_', '-')}=={stage['backend_version']})")
        profile = {t: (p["min"], p["opt"], p["max"]) for t, p in stage.get("profile", {}).items()}
        targets = stage.get("compute_capabilities") or list(compute_capabilities)
        before = len(members[stage["engine"]]) if "engine" in stage else 0
        start = time.perf_counter()
        try:
            with quiet_native():
                built = backend.build(members[stage["onnx"]], targets, profile=profile or None,
                                      strip=True)
        except BuildError as exc:
            raise CompileError(f"engine '{name}': the weight-stripped build failed ({exc}); "
                               "drop --strip-weights to ship it unstripped") from None
        seconds = time.perf_counter() - start
        member = stage.get("engine", f"engines/{name}.plan")
        members[member] = built.plan
        specs = {t["name"]: t for t in [*stage["inputs"], *stage["outputs"]]}
        io = stage.get("io") or [{**specs[t["name"]], "mode": t["mode"]} for t in built.io
                                 if t["name"] in specs]
        if sorted(t["name"] for t in io) != sorted(t["name"] for t in built.io):
            raise CompileError(f"engine '{name}': the stripped engine's inputs/outputs "
                               f"{sorted(t['name'] for t in built.io)} differ from the stage's; "
                               "recompile the bundle")
        stage.update({"backend": built.backend, "backend_version": built.backend_version,
                      "compute_capabilities": stage.get("compute_capabilities",
                                                        built.compute_capabilities),
                      "engine": member, "bytes": len(built.plan),
                      "sha256": bundle_format.sha256_hex(built.plan), "io": io,
                      "weights": "stripped"})
        results.append(StrippedEngine(name, before, len(built.plan), seconds))
        was = f"{before / 1e6:.1f} MB -> " if before else ""
        say(f"stripped engine {name}: plan {was}{len(built.plan) / 1e6:.2f} MB in {seconds:.1f} s "
            f"(weights refitted at load from {stage['onnx']}, "
            f"{len(members[stage['onnx']]) / 1e6:.1f} MB)")
    manifest["paths"] = ["cpu", "gpu"]
    manifest["requires"]["gpu_path"] = sorted(
        {f"{s['backend']}=={s['backend_version']}" for s in manifest["stages"] if "backend" in s})
    return manifest, members, results


def strip_bundle(source: Path, output: Path, backend_name: str = "auto",
                 compute_capabilities: Sequence[str] = (), sign_key: Optional[Path] = None,
                 say: Optional[Say] = None) -> Dict[str, Any]:
    """``trtc strip``: write ``output``, the bundle ``source`` with weight-stripped engines.

    ``source`` is read and fully verified first; ``output`` is written atomically (it may be
    ``source`` itself) and only replaces a bundle. A signature does not carry over (the engines
    changed): pass ``sign_key`` to sign the result.

    Returns:
        A JSON-able summary: bytes before and after, per engine.
    """
    from .backends import get_backend

    from .compiler import check_output_path

    say = say or (lambda _line: None)
    output = check_output_path(Path(output), {})
    # Cheap checks first (the manifest, the builder's probe); then every member, verified.
    opened = bundle_format.read_bundle(source, verify=False)
    try:
        check_strippable(opened.manifest)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None
    backend = get_backend(backend_name)
    check_can_strip(backend, "trtc strip")
    say(f"builder: {backend.name} {backend.version}")
    with opened:
        members = {name: opened.read_member(name) for name in opened.manifest["members"]}
    manifest, members, results = strip_engines(opened.manifest, members, backend, say,
                                               compute_capabilities)
    from .runtime.signing import signature_info

    signed = signature_info(opened) is not None
    tmp = bundle_format.partial_path(output)
    try:
        bundle_format.write_bundle(tmp, manifest, members)
        if sign_key is not None:
            from .runtime import signing

            say(f"signed with ed25519 key {signing.sign_bundle(tmp, sign_key)}")
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if signed and sign_key is None:
        say(f"note: {source} was signed; the stripped bundle is not (its engines changed): "
            "sign it with `trtc sign` or --sign-key")
    return {"source": str(source), "output": str(output), "bytes_before": opened.size,
            "bytes": output.stat().st_size, "engines": [r.to_json() for r in results],
            "signed": sign_key is not None}

