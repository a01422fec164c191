"""Peak memory of ``trtc compile`` against a plain MXNet forward of the same model.

    python benchmarks/memory.py [--models resnet50_v1,bert_large,mask_rcnn_r50] [--mask-size 512]
                                [--repeat 1] [--quick] [--json] [--work DIR]

Each model is exported once (seeded random weights: ``trtc.zoo`` for the zoo's image models,
``tests/models/families.py`` for ``bert``, ``bert_large`` (GluonNLP ``bert_24_1024_16``, seq 128)
and ``mask_rcnn_r50`` (GluonCV ``mask_rcnn_resnet50_v1b_coco``, 1x3xSxS, ``--mask-size``)), then
measured twice, each time in a fresh wrapper process of its own:

- ``compile``: ``trtc compile PARAMS -o OUT`` (fp32, the accuracy gate on, as users run it);
- ``MXNet``: a plain MXNet forward of the same files (``SymbolBlock.imports``, one call on the
  symbol's recorded input shapes, ones as values), what a user of the model already pays.

Peak = the larger of (a) the process tree's summed proportional set size (``Pss`` of
/proc/PID/smaps_rollup, the compiler and the children it forks for builds and MXNet forwards;
shared pages counted once) sampled every 50 ms, and (b) ``ru_maxrss`` of the wrapper's
``RUSAGE_CHILDREN`` (the largest single process, exact, but counting pages a forked child shares
with its parent in full). Goal (issue 22): compile peak <= 1.5 x MXNet-forward peak + 2 x the
params file's bytes. ``--quick``: the tiny test model of ``tests/models/tiny.py``, a smoke test
whose megabytes mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ("resnet50_v1", "bert_large", "mask_rcnn_r50")
FAMILY_MODELS = ("bert", "bert_large", "mask_rcnn_r50")  # exported by tests/models/families.py
GOAL_FORWARD, GOAL_PARAMS = 1.5, 2.0
POLL_S = 0.05
CLI = [sys.executable, "-c", "from trtc.cli import main; main()"]  # `trtc`, this interpreter's


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def goal_bytes(forward_peak: int, params_bytes: int) -> int:
    """Issue 22's bound on the compile's peak."""
    return int(GOAL_FORWARD * forward_peak + GOAL_PARAMS * params_bytes)


def _load_by_path(name: str, path: Path) -> Any:
    """A module of tests/models (not a package of the install), imported by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(model: str, out_dir: Path, mask_size: int = 512) -> Path:
    """Write the model's symbol and params into ``out_dir``; returns the params path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model == "tiny":
        return _load_by_path("trtc_test_tiny", REPO / "tests" / "models" / "tiny.py").export(
            "tiny", out_dir)
    if model in FAMILY_MODELS:
        families = _load_by_path("trtc_test_families", REPO / "tests" / "models" / "families.py")
        if model == "mask_rcnn_r50":
            return families.export_mask_rcnn_r50(out_dir, size=mask_size)
        if model == "bert_large":  # not in families.MODELS: too big for the test suite
            return families.export_bert_large(out_dir)
        return families.MODELS[model](out_dir)
    from trtc.zoo import export_example

    return Path(export_example(model, out_dir)[1])


# ---------------------------------------------------------------------------------------------
# measuring (the wrapper process)


def _children(pid: int) -> List[int]:
    found: List[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
    except (OSError, ValueError):
        pass
    return found


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) * 1024
    except (OSError, StopIteration, ValueError):
        return 0


def tree_pss(pid: int) -> int:
    """Summed Pss of ``pid`` and all its descendants (shared pages counted once)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _pss(current)
        todo.extend(_children(current))
    return total


def run_measured(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run ``command``, sampling its process tree's memory; call in a fresh process (the
    RUSAGE_CHILDREN maximum covers every child this process ever waited for)."""
    start = time.perf_counter()
    child = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, **(env or {})}, text=True)
    peak_tree = 0
    import threading

    out: Dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
               for k, s in (("stdout", child.stdout), ("stderr", child.stderr))]
    for reader in readers:
        reader.start()
    while child.poll() is None:
        peak_tree = max(peak_tree, tree_pss(child.pid))
        time.sleep(POLL_S)
    for reader in readers:
        reader.join()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"rc": child.returncode, "seconds": time.perf_counter() - start,
            "tree_pss_peak": peak_tree, "maxrss": maxrss, "peak": max(peak_tree, maxrss),
            "stdout_tail": out.get("stdout", "")[-2000:], "stderr_tail": out.get("stderr", "")[-3000:]}


def measure(command: Sequence[str], env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """:func:`run_measured` in a fresh wrapper process (this script with ``--measure``)."""
    done = subprocess.run([sys.executable, __file__, "--measure", "--", *command],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"the measuring wrapper failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mxnet_forward_main(params: Path) -> None:
    """A plain MXNet forward of PREFIX-symbol.json + params (the baseline process): bind, one
    forward on ones of the symbol's recorded input shapes."""
    import mxnet as mx

    symbol_path = Path(str(params).rsplit("-", 1)[0] + "-symbol.json")
    doc = json.loads(symbol_path.read_text())
    codes = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64"}
    loaded = mx.nd.load(str(params))
    weights = {k.split(":", 1)[-1] for k in loaded}
    inputs = [(n["name"], eval(n["attrs"]["__shape__"]), codes[int(n["attrs"].get("__dtype__", 0))])
              for n in doc["nodes"] if n["op"] == "null" and n["name"] not in weights
              and "__shape__" in n.get("attrs", {})]
    symbol = mx.sym.load(str(symbol_path))
    args = {k.split(":", 1)[-1]: v for k, v in loaded.items() if not k.startswith("aux:")}
    aux = {k.split(":", 1)[1]: v for k, v in loaded.items() if k.startswith("aux:")}
    args.update({name: mx.nd.ones(shape, dtype=dtype) for name, shape, dtype in inputs})
    executor = symbol.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
    for out in executor.forward(is_train=False):
        out.wait_to_read()


def model_row(model: str, work: Path, mask_size: int, repeat: int = 1) -> Dict[str, Any]:
    """Export ``model``, measure its compile and its MXNet forward (median of ``repeat``)."""
    directory = work / model
    _say(f"exporting {model}")
    # in a child: the exporting process keeps the Gluon net (4.7 GB for BERT-large) alive
    done = subprocess.run([sys.executable, __file__, "--export", model, str(directory),
                           str(mask_size)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exporting {model} failed: {done.stderr[-2000:]}")
    params = Path(done.stdout.strip().splitlines()[-1])
    params_bytes = params.stat().st_size
    runs: Dict[str, List[Dict[str, Any]]] = {"compile": [], "forward": []}
    for _ in range(repeat):
        _say(f"  {model}: MXNet forward")
        runs["forward"].append(measure([sys.executable, __file__, "--forward", str(params)]))
        _say(f"  {model}: trtc compile")
        runs["compile"].append(measure([*CLI, "compile", str(params),
                                        "-o", str(directory / f"{model}.trtb")]))
    for kind, done in runs.items():
        failed = [r for r in done if r["rc"] != 0]
        if failed:
            raise RuntimeError(f"{model}: {kind} failed (exit {failed[0]['rc']}): "
                               f"{failed[0]['stderr_tail'][-1500:]}")
    median = {k: sorted(v, key=lambda r: r["peak"])[len(v) // 2] for k, v in runs.items()}
    compile_peak, forward_peak = median["compile"]["peak"], median["forward"]["peak"]
    goal = goal_bytes(forward_peak, params_bytes)
    shape = ""
    if model == "mask_rcnn_r50":
        shape = f"1x3x{mask_size}x{mask_size}"
    return {"model": model, "shape": shape, "params_bytes": params_bytes,
            "forward_peak": forward_peak, "compile_peak": compile_peak,
            "compile_tree_pss_peak": median["compile"]["tree_pss_peak"],
            "compile_maxrss": median["compile"]["maxrss"], "compile_s": median["compile"]["seconds"],
            "goal_bytes": goal, "met": compile_peak <= goal}


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def table(rows: List[Dict[str, Any]]) -> str:
    head = ["model", "params MB", "MXNet fwd MB", "compile MB", "(1 process)", "goal MB",
            "compile/goal", "s", ""]
    lines = [head]
    for r in rows:
        lines.append([r["model"] + (f" {r['shape']}" if r["shape"] else ""), _mb(r["params_bytes"]),
                      _mb(r["forward_peak"]), _mb(r["compile_peak"]), _mb(r["compile_maxrss"]),
                      _mb(r["goal_bytes"]), f"{r['compile_peak'] / r['goal_bytes']:.2f}",
                      f"{r['compile_s']:.0f}", "met" if r["met"] else "MISSED"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--measure"]:  # the wrapper: one measurement, JSON on stdout
        print(json.dumps(run_measured(argv[2:] if argv[1:2] == ["--"] else argv[1:])))
        return 0
    if argv[:1] == ["--export"]:
        print(export(argv[1], Path(argv[2]), int(argv[3])))
        return 0
    if argv[:1] == ["--forward"]:
        mxnet_forward_main(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated: zoo names (resnet50_v1, ...), bert, bert_large, "
                             "mask_rcnn_r50")
    parser.add_argument("--mask-size", type=int, default=512, help="mask_rcnn_r50's input side")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per model (median)")
    parser.add_argument("--quick", action="store_true", help="the tiny test model only")
    parser.add_argument("--json", action="store_true", help="rows as JSON on stdout")
    parser.add_argument("--work", type=Path, help="keep exports and bundles here")
    args = parser.parse_args(argv)
    models = ["tiny"] if args.quick else [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="trtc-memory-") as tmp:
        work = args.work or Path(tmp)
        rows = [model_row(m, work, args.mask_size, args.repeat) for m in models]
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
