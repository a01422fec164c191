"""Crafted MXNet stages (issue 21 part 3): attribute values MXNet divides by without checking
(Convolution num_group=0 was a SIGFPE at load) are refused before MXNet sees them, and ops that
write at positions their index input names (scatter_nd, SequenceReverse with lengths,
_contrib_index_copy: segfaults, heap corruption) get those indices range-checked before MXNet
runs, or the stage is refused when its indices are computed inside it. Each case runs in a child
process: a regression fails one test instead of killing the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mxnet")

_PRELUDE = textwrap.dedent("""
    import json, numpy as np
    import mxnet as mx
    from trtc.runtime import BundleError, InputError
    from trtc.runtime.stages.residual import MXNetStage

    def stage(symbol, inputs, outputs):
        spec = lambda n, s: {"name": n, "shape": list(s), "dtype": "float32"}
        return MXNetStage({"name": "r", "inputs": [spec(n, s) for n, s in inputs],
                           "outputs": [spec(n, s) for n, s in outputs], "params": []},
                          symbol.tojson().encode(), {})

    def outcome(fn):
        try:
            fn()
            print("ran")
        except (BundleError, InputError) as exc:
            print(type(exc).__name__, str(exc).splitlines()[0])
""")


def _run(body: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-800:]}"
    return proc.stdout.strip()


@pytest.mark.parametrize("attrs", [{"num_group": "0"}, {"stride": "(0, 1)"}, {"dilate": "(1, 0)"},
                                   {"kernel": "(0, 3)"}, {"num_filter": "0"}])
def test_convolution_attributes_mxnet_divides_by_are_refused(attrs) -> None:
    text = _run(f"""
        x = mx.sym.Variable("x")
        w = mx.sym.Variable("w")
        conv = mx.sym.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True, name="c")
        doc = json.loads(conv.tojson())
        doc["nodes"][-1]["attrs"].update({attrs!r})
        from trtc.runtime.stages.residual import symbol_from_json
        def load():
            try:
                symbol_from_json(mx, json.dumps(doc).encode())
            except ValueError as exc:
                raise BundleError(str(exc))
        outcome(load)
    """)
    key = next(iter(attrs))
    assert text.startswith("BundleError") and f"Convolution {key}=" in text, text


@pytest.mark.parametrize("lengths,ok", [([4, 1], True), ([5, 1], False), ([-1, 2], False)])
def test_sequence_reverse_lengths_are_checked(lengths, ok) -> None:
    text = _run(f"""
        x, n = mx.sym.Variable("x"), mx.sym.Variable("n")
        sym = mx.sym.SequenceReverse(x, n, use_sequence_length=True, name="rev")
        s = stage(sym, [("x", (4, 2, 3)), ("n", (2,))], [("rev_output", (4, 2, 3))])
        x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
        n = np.array({lengths!r}, dtype=np.float32)
        def call():
            out = s.run({{"x": x, "n": n}})["rev_output"]
            ref = mx.nd.SequenceReverse(mx.nd.array(x), mx.nd.array(n), use_sequence_length=True)
            assert np.array_equal(out, ref.asnumpy())
        outcome(call)
    """)
    assert text == "ran" if ok else text.startswith("InputError") and "outside [0, 5)" in text, text


@pytest.mark.parametrize("index,ok", [([0, 3], True), ([7, 0], False), ([-1, 0], False)])
def test_index_copy_indices_are_checked(index, ok) -> None:
    text = _run(f"""
        old, idx, new = (mx.sym.Variable(n) for n in ("old", "idx", "new"))
        sym = mx.sym.contrib.index_copy(old, idx, new, name="ic")
        s = stage(sym, [("old", (4, 3)), ("idx", (2,)), ("new", (2, 3))], [("ic_output", (4, 3))])
        feeds = {{"old": np.zeros((4, 3), np.float32), "idx": np.array({index!r}, np.float32),
                 "new": np.ones((2, 3), np.float32)}}
        outcome(lambda: s.run(feeds))
    """)
    assert text == "ran" if ok else text.startswith("InputError") and "outside [0, 4)" in text, text


@pytest.mark.parametrize("indices,ok", [([[0, 2], [1, 1]], True), ([[0, 5], [1, 1]], False),
                                        ([[0, -1], [1, 1]], False)])
def test_scatter_nd_indices_are_checked(indices, ok) -> None:
    text = _run(f"""
        d, i = mx.sym.Variable("d"), mx.sym.Variable("i")
        sym = mx.sym.scatter_nd(d, i, shape=(3, 3), name="sc")
        s = stage(sym, [("d", (2,)), ("i", (2, 2))], [("sc_output", (3, 3))])
        feeds = {{"d": np.ones(2, np.float32), "i": np.array({indices!r}, np.float32)}}
        outcome(lambda: s.run(feeds))
    """)
    assert text == "ran" if ok else text.startswith("InputError"), text


def test_indices_computed_inside_the_stage_are_refused() -> None:
    text = _run("""
        d, i = mx.sym.Variable("d"), mx.sym.Variable("i")
        sym = mx.sym.scatter_nd(d, mx.sym.relu(i) * 100, shape=(3, 3), name="sc")
        outcome(lambda: stage(sym, [("d", (2,)), ("i", (2, 2))], [("sc_output", (3, 3))]))
    """)
    assert text.startswith("BundleError") and "indices computed inside an MXNet stage" in text


def test_mxnet_error_text_drops_the_shapes_dict() -> None:
    """Issue 21: an error read `...(data:1x3x64x64): (1, 3, 64, 64)}: Error in ...`."""
    from trtc.runtime.stages.residual import mxnet_error_text

    exc = Exception("MXNetError: {data: (1, 3, 64, 64)}: Error in operator reshape0: Shape "
                    "inconsistent, Provided = [4], inferred shape=[8]")
    assert mxnet_error_text(exc).startswith("Error in operator reshape0: Shape inconsistent")
