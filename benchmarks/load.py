"""Peak memory of loading a bundle, per execution path, against the bytes that path needs.

    python benchmarks/load.py [BUNDLE ...] [--models resnet50_v1] [--exclude-ops Pooling]
                              [--repeat 3] [--quick] [--json]

Without BUNDLE it exports each ``--models`` zoo architecture (seeded random weights) and compiles
two fp32 bundles of it, target all: the whole model, and a mixed one with ``--exclude-ops`` kept
in MXNet (engines, residual MXNet stages and residual params). ``--quick``: the tiny test models
of ``tests/models/tiny.py`` instead (``tiny``, and ``pair`` with BatchNorm in MXNet), a smoke test
whose megabytes are too few to mean anything.

Method. Every measurement runs in a fresh Python process, which first imports numpy, ONNX
Runtime, trtc's runtime (and MXNet when the bundle has residual stages), makes the input arrays,
and takes its peak resident set size (``VmHWM`` of /proc/self/status, else ``ru_maxrss``) as the
baseline; then it loads, and takes the peak again. Reported: peak - baseline ("peak MB"), and that
divided by ``needed``, the bytes of the members the path reads (``bundle.path_members``); with
``--repeat N`` each measurement runs N times (N processes) and the median counts. Bytes read are
``rchar`` of /proc/self/io over the same span (every read(2)/pread(2) of the process).

- CPU path: ``load(bundle, device="cpu")`` and one call, three ways. ``trtc``: the runtime as it
  is. ``executor``: the same stages (``Model``) built from each member's bytes read from a plain
  file extracted beforehand, with no checks: the executor's own working memory (ONNX Runtime's
  sessions, MXNet's bound params) plus the bytes it is handed, the least any loader can cost.
  ``old reader``: the same, with the whole bundle read into memory first (16 MiB reads, joined)
  and kept while members are sliced out of it, as trtc's reader did before issue 15.
- GPU path (no engine is deserialized: no TensorRT here): what ``load`` does before TensorRT
  sees a plan, i.e. opening the bundle and reading and verifying each member
  ``path_members(manifest, "gpu")`` lists (plans, residual symbols and params), with engine and
  residual stage objects that keep nothing; the same three ways. TensorRT's own deserialization
  and MXNet's binding on the GPU are not measured here.

Goal (issue 15): peak <= 1.3 x needed + the executor's own working memory, i.e. with the
executor's own memory taken as ``executor peak - needed``: ``(trtc peak - executor peak) /
needed <= 0.3`` (the "over exec" column). The "trtc/needed" column is the plain ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

GOAL = 0.3  # (trtc peak - executor peak) / needed
DEFAULT_MODELS = ("resnet50_v1",)
DEFAULT_EXCLUDE = ("Pooling",)
QUICK_CASES = (("tiny", "tiny", ()), ("pair-mixed", "pair", ("BatchNorm",)))
READERS = ("trtc", "executor", "old reader")
CHUNK = 16 * 2**20  # the old reader's read size


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the bundles


def _tiny_module() -> Any:
    """tests/models/tiny.py, imported by path (it is not a package of the install)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("trtc_test_tiny", REPO / "tests" / "models" /
                                                  "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_bundles(cases: Sequence[Tuple[str, str, Tuple[str, ...]]], quick: bool,
                 out_dir: Path) -> List[Path]:
    """Compile each (label, model, exclude_ops) case once, fp32, target all."""
    from trtc import CompileSettings, compile
    from trtc.zoo import export_example

    exported: Dict[str, Path] = {}
    bundles = []
    for label, model, exclude in cases:
        if model not in exported:
            _say(f"exporting {model}")
            exported[model] = (_tiny_module().export(model, out_dir) if quick
                               else export_example(model, out_dir)[1])
        bundle = out_dir / f"{label}.trtb"
        _say(f"compiling {bundle.name}")
        compile(CompileSettings(params=exported[model], output=bundle, exclude_ops=exclude))
        bundles.append(bundle)
    return bundles


# ---------------------------------------------------------------------------------------------
# one measurement (in its own process)


def _peak_bytes() -> int:
    """This process's peak resident set size (ru_maxrss would include the parent's peak from
    before the exec; VmHWM does not)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bytes_read() -> Optional[int]:
    try:
        with open("/proc/self/io") as io_stats:
            return next(int(line.split()[1]) for line in io_stats if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None


class PlainMembers:
    """What the stages need of a Bundle, from member files extracted beforehand: each read
    plainly when asked for, unchecked (the executor reference)."""

    def __init__(self, path: str, manifest: Dict[str, Any], members_dir: Path):
        self.path, self.manifest, self.members_dir = path, manifest, members_dir

    def read_member(self, name: str) -> bytes:
        return (self.members_dir / name).read_bytes()


class WholeFile(PlainMembers):
    """The reader before issue 15: the whole file read into memory and kept, members sliced
    (copied) out of it."""

    def __init__(self, path: str, manifest: Dict[str, Any], members_dir: Path):
        super().__init__(path, manifest, members_dir)
        chunks = []
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        self.data = b"".join(chunks)
        del chunks
        with zipfile.ZipFile(path) as zf:
            self.spans = {i.filename: i.header_offset for i in zf.infolist()}
            self.sizes = {i.filename: i.file_size for i in zf.infolist()}

    def read_member(self, name: str) -> bytes:
        offset = self.spans[name]
        name_length, extra_length = int.from_bytes(self.data[offset + 26:offset + 28], "little"), \
            int.from_bytes(self.data[offset + 28:offset + 30], "little")
        start = offset + 30 + name_length + extra_length
        return self.data[start:start + self.sizes[name]]


class _Kept:
    """Stands in for an engine or residual stage on the GPU path: keeps nothing (TensorRT's
    deserialization and MXNet's binding are not measured)."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass


def measure_child(bundle: Path, path: str, reader: str, members_dir: Path) -> Dict[str, Any]:
    """One measurement, in this process (run by ``--child``): peak RSS and bytes read, from a
    baseline taken after the imports, for ``reader`` loading ``bundle`` on ``path``."""
    import numpy as np
    import onnxruntime  # noqa: F401  (in the baseline)

    from trtc.runtime import load
    from trtc.runtime import model as model_module
    from trtc.runtime.bundle import path_members, read_bundle
    from trtc.runtime.stages import engine_cpu, engine_cuda, residual  # noqa: F401

    with read_bundle(bundle, verify=False) as opened:
        manifest = opened.manifest
    if manifest["requires"].get("mxnet"):
        import mxnet  # noqa: F401
    rng = np.random.default_rng(0)
    feeds = {t["name"]: rng.random(t["shape"]).astype(t["dtype"]) for t in manifest["inputs"]}
    if path == "gpu":  # the stage objects keep nothing; what is measured is the reading
        engine_cuda.TensorRTStage = _Kept
        residual.MXNetStage = _Kept
    base, read0 = _peak_bytes(), _bytes_read()
    if reader == "trtc" and path == "cpu":
        load(bundle, device="cpu")(**feeds)
    elif reader == "trtc":
        with read_bundle(bundle, verify=False) as opened:
            model_module._stages(opened, "cuda", "tensorrt")
    else:
        source = (PlainMembers if reader == "executor" else WholeFile)(
            str(bundle), manifest, members_dir)
        if path == "cpu":
            model_module.Model(source, "cpu")(**feeds)
        else:
            model_module._stages(source, "cuda", "tensorrt")
    peak, read1 = _peak_bytes(), _bytes_read()
    return {"peak_bytes": peak - base,
            "read_bytes": None if read0 is None or read1 is None else read1 - read0,
            "needed_bytes": sum(manifest["members"][n]["bytes"]
                                for n in path_members(manifest, path))}


def measure(bundle: Path, path: str, reader: str, members_dir: Path,
            repeat: int) -> Dict[str, Any]:
    """``measure_child`` in ``repeat`` fresh processes; the run of median peak."""
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, __file__, "--child", path, reader,
                               str(members_dir), str(bundle)], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{reader} {path} on {bundle.name} failed: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    return sorted(runs, key=lambda run: run["peak_bytes"])[len(runs) // 2]


def bundle_rows(bundle: Path, work: Path, repeat: int = 1) -> List[Dict[str, Any]]:
    """One row per execution path of ``bundle``: each reader measured in its own process."""
    from trtc.runtime.bundle import execution_paths, read_bundle

    members_dir = work / f"{bundle.stem}-members"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(members_dir)  # trtc's own bundles: member names are checked, safe
    with read_bundle(bundle) as opened:
        paths = execution_paths(opened.manifest)
    rows = []
    for path in paths:
        _say(f"measuring {bundle.name}, {path} path")
        results = {reader: measure(bundle, path, reader, members_dir, repeat)
                   for reader in READERS}
        needed = results["trtc"]["needed_bytes"]
        peaks = {reader: results[reader]["peak_bytes"] for reader in READERS}
        over = (peaks["trtc"] - peaks["executor"]) / needed
        rows.append({
            "bundle": bundle.name, "path": path, "file_bytes": bundle.stat().st_size,
            "needed_bytes": needed,
            "peak_bytes": peaks,
            "read_bytes": {reader: results[reader]["read_bytes"] for reader in READERS},
            "trtc_vs_needed": peaks["trtc"] / needed,
            "old_vs_needed": peaks["old reader"] / needed,
            "over_executor_vs_needed": over,
            "goal_met": over <= GOAL,
        })
    return rows


# ---------------------------------------------------------------------------------------------
# the table


def _mb(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f}"


def table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'bundle':<24}{'path':<6}{'file MB':>9}{'needed MB':>11}{'trtc MB':>9}"
             f"{'exec MB':>9}{'old MB':>8}{'trtc/needed':>13}{'old/needed':>12}{'over exec':>11}"
             f"{'read MB':>9}{'old read MB':>13}  goal over exec <= {GOAL}"]
    for row in rows:
        peak, read = row["peak_bytes"], row["read_bytes"]
        lines.append(f"{row['bundle']:<24}{row['path']:<6}{_mb(row['file_bytes']):>9}"
                     f"{_mb(row['needed_bytes']):>11}{_mb(peak['trtc']):>9}"
                     f"{_mb(peak['executor']):>9}{_mb(peak['old reader']):>8}"
                     f"{row['trtc_vs_needed']:>13.2f}{row['old_vs_needed']:>12.2f}"
                     f"{row['over_executor_vs_needed']:>11.2f}{_mb(read['trtc']):>9}"
                     f"{_mb(read['old reader']):>13}  {'met' if row['goal_met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        path, reader, members_dir, bundle = argv[1:5]
        print(json.dumps(measure_child(Path(bundle), path, reader, Path(members_dir))))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path, help="measure these bundles instead")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="zoo architectures, comma-separated (default: %(default)s)")
    parser.add_argument("--exclude-ops", default=",".join(DEFAULT_EXCLUDE),
                        help="MXNet ops kept in MXNet in the mixed bundle (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="processes per measurement; the median counts (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny test models, once each (a smoke test, not a measurement)")
    parser.add_argument("--json", action="store_true", help="rows as JSON on stdout")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat takes 1 or more")
    repeat = 1 if args.quick else args.repeat
    exclude = tuple(op for op in args.exclude_ops.split(",") if op)
    cases = list(QUICK_CASES) if args.quick else [
        case for model in args.models.split(",") if model
        for case in ((model, model, ()), (f"{model}-mixed", model, exclude))]
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trtc-load-") as tmp:
        work = Path(tmp)
        bundles = list(args.bundles) or make_bundles(cases, args.quick, work)
        for bundle in bundles:
            rows.extend(bundle_rows(bundle, work, repeat))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"peak RSS of loading, per path, over a baseline taken after the imports (fresh "
              f"process each, median of {repeat}); CPU path: load + one call; GPU path: reading "
              "and verifying its members only (TensorRT's deserialize not measured)")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
