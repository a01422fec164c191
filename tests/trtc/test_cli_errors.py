"""Every user mistake at the command line: one line on stderr ("error: what is wrong; what to
do"), no traceback, and the exit code of its error class (runtime/errors.py): 2 usage, 1 compile
failure, 3 bad bundle, 4 incompatible bundle, 5 bad input arrays."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
from typer.testing import CliRunner

from models import tiny
from trtc.cli import app

runner = CliRunner()


def _fails(args: List[str], code: int, *phrases: str) -> str:
    """Run the CLI; it must exit with ``code`` and one 'error:' line holding ``phrases``."""
    result = runner.invoke(app, args)
    stderr = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])
    if ("-q" in args or args[0] in ("inspect", "run")) and "partition:" not in stderr:
        assert stderr.strip().splitlines() == errors, stderr  # nothing but the error line
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-0000.params + tiny-symbol.json, and pair's, in one directory."""
    directory = Path(tmp_path_factory.mktemp("cli-models"))
    tiny.export("tiny", directory)
    tiny.export("pair", directory)
    return directory


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.bundle("tiny", tmp_path_factory)


# ----------------------------------------------------------------------------------------------
# trtc compile: model files
# ----------------------------------------------------------------------------------------------
def test_params_file_missing(files: Path) -> None:
    _fails(["compile", str(files / "nope-0000.params"), "-q"], 2, "does not exist")


def test_symbol_given_instead_of_params(files: Path) -> None:
    _fails(["compile", str(files / "tiny-symbol.json"), "-q"], 2, "is a symbol file")


def test_symbol_missing_next_to_params(files: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely-0000.params"
    shutil.copy(files / "tiny-0000.params", lonely)
    _fails(["compile", str(lonely), "-q"], 2, "lonely-symbol.json not found", "--symbol")


def test_params_not_named_by_convention(files: Path, tmp_path: Path) -> None:
    odd = tmp_path / "weights.bin"
    shutil.copy(files / "tiny-0000.params", odd)
    _fails(["compile", str(odd), "-q"], 2, "--symbol")


def test_explicit_symbol_missing(files: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--symbol", str(files / "x.json"), "-q"],
           2, "does not exist (--symbol)")


def test_mismatched_symbol_and_params(files: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--symbol",
            str(files / "pair-symbol.json"), "-q"], 2, "does not belong to", "matching pair")


@pytest.mark.parametrize("content", [b"", b"not params at all", b"\x00" * 64,
                                     json.dumps({"weights": [1, 2]}).encode()])
def test_params_file_that_is_not_mxnet_params(files: Path, tmp_path: Path, content: bytes) -> None:
    shutil.copy(files / "tiny-symbol.json", tmp_path / "bad-symbol.json")
    (tmp_path / "bad-0000.params").write_bytes(content)
    _fails(["compile", str(tmp_path / "bad-0000.params"), "-q"], 2,
           "is not an MXNet params file")


def test_numpy_interface_params_say_what_mxnet_said(tmp_path: Path) -> None:
    """Issue 22 part 5: params saved under npx.set_np() were "not an MXNet params file"; the
    error now says what they are, what MXNet said and what to do. (Exported in a child process:
    npx.set_np() switches this process's MXNet for good.)"""
    import subprocess
    import sys

    script = ("import mxnet as mx; from mxnet import gluon, npx, np; npx.set_np(); "
              "net = gluon.nn.HybridSequential(); net.add(gluon.nn.Dense(4)); net.initialize(); "
              "net.hybridize(); net(np.ones((1, 8))); net.export('npm')")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=120,
                   capture_output=True)
    _fails(["compile", str(tmp_path / "npm-0000.params"), "--input", "data:1x8", "-q"], 2,
           "npm-0000.params was saved with MXNet's numpy interface (npx.set_np())",
           "MXNet: ", "np shape semantics", "export the model with MXNet's classic interface")


def test_numpy_file_as_params(files: Path, tmp_path: Path) -> None:
    shutil.copy(files / "tiny-symbol.json", tmp_path / "np-symbol.json")
    with open(tmp_path / "np-0000.params", "wb") as fh:
        np.save(fh, np.zeros(3))
    _fails(["compile", str(tmp_path / "np-0000.params"), "-q"], 2, "not an MXNet params file")


@pytest.mark.parametrize("content", ["", "{", "[]", '{"nodes": []}', '{"nodes": "x", "heads": 1}'])
def test_symbol_that_is_not_a_symbol(files: Path, tmp_path: Path, content: str) -> None:
    shutil.copy(files / "tiny-0000.params", tmp_path / "s-0000.params")
    (tmp_path / "s-symbol.json").write_text(content)
    _fails(["compile", str(tmp_path / "s-0000.params"), "-q"], 2, "not an MXNet symbol JSON")


# ----------------------------------------------------------------------------------------------
# trtc compile: flags
# ----------------------------------------------------------------------------------------------
def test_input_naming_a_non_input(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--input", "image:1x3x16x16", "-o",
            str(tmp_path / "x.trtb"), "-q"], 2, "'image'", "not an input", "inputs are: data")


@pytest.mark.parametrize("spec", ["data", "data:", "data:1x3xAx16", ":1x3x16x16", "data:0x3x16x16",
                                  "data:-1x3", "data:1.5x3"])
def test_bad_input_shape_syntax(files: Path, tmp_path: Path, spec: str) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--input", spec, "-o",
            str(tmp_path / "x.trtb"), "-q"], 2, "--input")


def test_input_given_twice(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--input", "data:1x3x16x16", "--input",
            "data:1x3x16x16", "-q"], 2, "given twice")


@pytest.mark.parametrize("flags,phrase", [
    (["--compute-capability", "sm86"], "--compute-capability"),
    (["--tolerance", "0"], "--tolerance"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--min-segment-size", "0"], "--min-segment-size"),
    (["--import", "no_such_module_xyz"], "--import no_such_module_xyz"),
    (["--import", "missing_file.py"], "no such file"),
])
def test_bad_flag_values(files: Path, tmp_path: Path, flags: List[str], phrase: str) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path / "x.trtb"), "-q",
            *flags], 2, phrase)


def test_unknown_backend(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path / "x.trtb"), "-q",
            "--backend", "tensorflow"], 2, "tensorflow")


def test_output_in_a_missing_directory(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o",
            str(tmp_path / "no" / "such" / "dir" / "m.trtb"), "-q"], 2, "does not exist",
           "create it first")
    assert not (tmp_path / "no").exists()


def test_output_that_is_a_directory(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path), "-q"], 2,
           "is a directory")


def test_exclude_op_naming_no_op_warns_and_compiles(files: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.trtb"
    result = runner.invoke(app, ["compile", str(files / "tiny-0000.params"), "-o", str(out),
                                 "--exclude-op", "LSTM"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "--exclude-op LSTM" in warnings[0]
    assert "Convolution" in warnings[0]  # it lists the ops the model has
    assert out.exists()


def test_unknown_option_is_a_usage_error(files: Path) -> None:
    result = runner.invoke(app, ["compile", str(files / "tiny-0000.params"), "--fp17"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_accuracy_gate_failure_is_exit_1(files: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.trtb"
    error = _fails(["compile", str(files / "tiny-0000.params"), "-o", str(out), "--tolerance",
                    "1e-30"], 1, "accuracy gate failed", "--tolerance")
    assert "on MXNet's own inputs" in error
    assert not out.exists()
    # the partition report comes with the error, even under -q (it says what ran where)
    result = runner.invoke(app, ["compile", str(files / "tiny-0000.params"), "-o", str(out),
                                 "--tolerance", "1e-30", "-q"])
    assert result.exit_code == 1 and "partition:" in result.stderr


# ----------------------------------------------------------------------------------------------
# trtc example
# ----------------------------------------------------------------------------------------------
def test_example_unknown_model(tmp_path: Path) -> None:
    _fails(["example", "resnet19_v2", "-o", str(tmp_path)], 2, "unknown model 'resnet19_v2'",
           "resnet18_v2")
    assert list(tmp_path.iterdir()) == []


def test_example_without_a_name() -> None:
    result = runner.invoke(app, ["example"])
    assert result.exit_code == 2 and "give a model name" in result.stderr
    assert "resnet18_v2" in result.stdout  # the list, to choose from


def test_example_bad_batch(tmp_path: Path) -> None:
    _fails(["example", "resnet18_v2", "--batch", "0", "-o", str(tmp_path)], 2, "--batch")


# ----------------------------------------------------------------------------------------------
# trtc inspect / run on bad bundles
# ----------------------------------------------------------------------------------------------
def test_inspect_missing_bundle(tmp_path: Path) -> None:
    _fails(["inspect", str(tmp_path / "none.trtb")], 3, "no such bundle file")


def test_inspect_corrupted_bundles(bundle: Path, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"hello",
        "flipped": data[:-5000] + bytes([data[-5000] ^ 0xFF]) + data[-4999:],
    }
    info = zipfile.ZipFile(bundle).getinfo("engines/engine0.plan")
    engine_at = info.header_offset + 30 + len(info.filename) + 100
    cases["engine bit"] = data[:engine_at] + bytes([data[engine_at] ^ 1]) + data[engine_at + 1:]
    for name, content in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.trtb"
        path.write_bytes(content)
        line = _fails(["inspect", str(path)], 3, str(path))
        assert "again" in line or "not a" in line, (name, line)


def test_inspect_future_format_is_exit_4(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "future.trtb"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["format_version"] = 3
                data = json.dumps(manifest).encode()
            target.writestr(info.filename, data)
    _fails(["inspect", str(path)], 4, "format v3", "reads format v2")
    _fails(["run", str(path), "--device", "cpu"], 4, "format v3")


def test_run_wrong_input_shape_is_exit_5(bundle: Path, tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((1, 3, 8, 8), np.float32))
    _fails(["run", str(bundle), "--device", "cpu", "--input", f"data={npy}"], 5, "input 'data'",
           "expected shape (1, 3, 16, 16)", "got (1, 3, 8, 8)")


def test_run_wrong_input_dtype_and_name(bundle: Path, tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((1, 3, 16, 16), np.int64))
    _fails(["run", str(bundle), "--device", "cpu", "--input", f"data={npy}"], 5,
           "expected dtype float32, got int64")
    np.save(npy, np.zeros((1, 3, 16, 16), np.float32))
    _fails(["run", str(bundle), "--device", "cpu", "--input", f"date={npy}"], 5,
           "unknown input 'date'", "did you mean 'data'")


def test_run_unreadable_input_file(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    _fails(["run", str(bundle), "--device", "cpu", "--input", f"data={bad}"], 2, "cannot read")
    _fails(["run", str(bundle), "--device", "cpu", "--input", "data"], 2, "NAME=FILE.npy")


def test_run_bad_device(bundle: Path) -> None:
    _fails(["run", str(bundle), "--device", "tpu"], 2, "device must be one of")


def test_run_cuda_without_a_usable_gpu_is_exit_4(bundle: Path) -> None:
    result = runner.invoke(app, ["run", str(bundle), "--device", "cuda"])
    if result.exit_code == 0:
        pytest.skip("this machine has a GPU that can run the bundle")
    _fails(["run", str(bundle), "--device", "cuda"], 4, "device='cuda' cannot be served")


def test_inspect_graph_with_a_malformed_residual_symbol(tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path) -> None:
    """A residual symbol that does not match the manifest (checksums fixed: an intact but wrong
    bundle) is a BundleError, exit 3, not an internal error."""
    from bundle_surgery import manifest_of, members_of, repack

    good = tiny.bundle("pair", tmp_path_factory, ("BatchNorm",))
    members = members_of(good)
    name = next(n for n, _ in members if n.startswith("residual/") and n.endswith(".json"))
    for label, text in {"not json": b"{nodes", "no heads": b'{"nodes": []}'}.items():
        edited = [(n, text if n == name else data) for n, data in members]
        path = tmp_path / f"{label.replace(' ', '-')}.trtb"
        path.write_bytes(repack(edited, manifest_of(edited)))
        _fails(["inspect", str(path), "--graph", str(tmp_path / "g.dot")], 3, str(path),
               "residual stage's symbol")


# ----------------------------------------------------------------------------------------------
# No internal errors (exit 70) and typer's usage errors as one line (issue 11, part 6)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "-99999999999999999999", str(2**32)])
def test_seed_out_of_range_is_a_usage_error(files: Path, tmp_path: Path, seed: str) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path / "x.trtb"), "-q",
            "--seed", seed], 2, "--seed", "[0, 2^32)")
    _fails(["example", "resnet18_v2", "-o", str(tmp_path), "--seed", seed], 2, "--seed")


@pytest.mark.parametrize("cc", ["99.9", "0.0", "9.0", "８.６", "8.6.1", "08", "8.60"])
def test_compute_capability_out_of_range_is_a_usage_error(files: Path, tmp_path: Path,
                                                          cc: str) -> None:
    """TensorRT-RTX targets only the compute capabilities of its ComputeCapability enum (7.5,
    8.0, 8.6, 8.9, 12.0, 12.1 in 1.7); anything else, or not ASCII MAJOR.MINOR, says so."""
    line = _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path / "x.trtb"),
                   "-q", "--backend", "tensorrt_rtx", "--compute-capability", cc], 2,
                  "--compute-capability")
    assert "MAJOR.MINOR" in line or "8.6" in line, line
    assert not (tmp_path / "x.trtb").exists()


def test_run_save_into_a_missing_directory(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "out.npz"
    _fails(["run", str(bundle), "--device", "cpu", "--save", str(target)], 2, "--save",
           "does not exist")
    _fails(["run", str(bundle), "--device", "cpu", "--save", str(tmp_path)], 2, "is a directory")
    assert not (tmp_path / "no").exists()


def test_inspect_graph_with_a_deeply_nested_residual_symbol(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A residual symbol nested 1e5 deep (checksums fixed) is a BundleError, not a
    RecursionError (exit 70)."""
    from bundle_surgery import manifest_of, members_of, repack

    members = members_of(tiny.bundle("pair", tmp_path_factory, ("BatchNorm",)))
    name = next(n for n, _ in members if n.startswith("residual/") and n.endswith(".json"))
    depth = 100_000
    for label, text in {"nodes": b'{"nodes": ' + b"[" * depth + b"]" * depth + b', "heads": []}',
                        "attrs": b'{"nodes": [{"op": "x", "name": "n", "attrs": '
                                 + b'{"a": ' * depth + b"1" + b"}" * depth + b'}], "heads": []}'
                        }.items():
        edited = [(n, text if n == name else data) for n, data in members]
        path = tmp_path / f"{label}.trtb"
        path.write_bytes(repack(edited, manifest_of(edited)))
        _fails(["inspect", str(path), "--graph", str(tmp_path / "g.dot")], 3, str(path),
               "residual stage's symbol")


@pytest.mark.parametrize("args,phrase", [
    (["compile", "m-0000.params", "--tolerance", "abc"], "--tolerance"),
    (["compile", "m-0000.params", "--fp17"], "--fp17"),
    (["compile"], "Missing argument"),
    (["inspect"], "Missing argument"),
    (["run", "b.trtb", "--iterations", "3"], "--iterations"),
    (["bench", "b.trtb", "--batch", "x"], "--batch"),
    (["no-such-command"], "no-such-command"),
])
def test_typer_usage_errors_are_one_line(args: List[str], phrase: str) -> None:
    """typer's own usage errors: one 'error:' line on stderr, exit 2, nothing on stdout (no
    'Usage:' block, no box)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert phrase in lines[0] and "--help" in lines[0]


def test_stdout_carries_only_trtcs_output(bundle: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A library printing to stdout while a command runs (ONNX Runtime's "EP Error" banner)
    goes to stderr: `--json` output stays parseable."""
    import trtc.inspection

    summary_json = trtc.inspection.summary_json

    def noisy(opened):  # type: ignore[no-untyped-def]
        print("*************** EP Error ***************")
        return summary_json(opened)

    monkeypatch.setattr(trtc.inspection, "summary_json", noisy)
    result = runner.invoke(app, ["inspect", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["format_version"] == 1
    assert "EP Error" in result.stderr


def test_sigterm_after_the_output_was_replaced_finishes(tmp_path: Path) -> None:
    """SIGTERM before os.replace: exit 143, nothing replaced. After it: the command has
    succeeded, so the signal is ignored and the command finishes (exit 0)."""
    import signal

    from trtc import cli

    target = tmp_path / "m.trtb"
    target.write_bytes(b"old")
    with cli._writing(target):
        with pytest.raises(SystemExit) as exit_info:
            cli._terminated(signal.SIGTERM, None)
        assert exit_info.value.code == 128 + signal.SIGTERM
        replacement = tmp_path / "new.partial"
        replacement.write_bytes(b"new")
        os.replace(replacement, target)
        cli._terminated(signal.SIGTERM, None)  # returns: the command goes on to exit 0
    with pytest.raises(SystemExit):  # outside a write, SIGTERM stops the command as before
        cli._terminated(signal.SIGTERM, None)


# ----------------------------------------------------------------------------------------------
# issue 11: the remaining internal errors of `trtc compile`
# ----------------------------------------------------------------------------------------------
def test_symbol_nested_too_deep_is_a_usage_error(files: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep-symbol.json"
    deep.write_text('{"nodes": ' + "[" * 100_000 + "]" * 100_000 + ', "heads": []}')
    _fails(["compile", str(files / "tiny-0000.params"), "--symbol", str(deep), "-o",
            str(tmp_path / "m.trtb"), "-q"], 2, "deep-symbol.json")


def test_a_256_character_output_name_is_a_usage_error(files: Path, tmp_path: Path) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "-o", str(tmp_path / ("m" * 251 + ".trtb")),
            "-q"], 2, "at most 255")


def test_a_250_character_output_name_compiles(files: Path, tmp_path: Path) -> None:
    out = tmp_path / ("m" * 245 + ".trtb")
    result = runner.invoke(app, ["compile", str(files / "tiny-0000.params"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize("spec,phrase", [("data:100000x100000x100000", "more than trtc verifies"),
                                         ("data:1_6x3", "ASCII digits"), ("data:１x3", "ASCII digits"),
                                         ("data:1xx3", "ASCII digits")])
def test_input_quirks_are_usage_errors(files: Path, tmp_path: Path, spec: str, phrase: str) -> None:
    _fails(["compile", str(files / "tiny-0000.params"), "--input", spec, "-o",
            str(tmp_path / "m.trtb"), "-q"], 2, phrase)


def test_debug_after_the_subcommand(tmp_path, monkeypatch):
    """`trtc inspect X --debug` works like `trtc --debug inspect X` (the error text says --debug)."""
    from trtc import cli

    monkeypatch.setitem(cli._STATE, "debug", False)  # restored after: --debug is process-wide
    monkeypatch.setenv("TRTC_DEBUG", "")
    result = runner.invoke(app, ["inspect", str(tmp_path / "missing.trtb"), "--debug"])
    assert result.exit_code == 3, result.output
    assert "No such option" not in result.output and "no such bundle file" in result.stderr


# ----------------------------------------------------------------------------------------------
# hostile inputs: valid models trtc refused, and bad ones that crashed or said too little
# ----------------------------------------------------------------------------------------------
def _mutated(files: Path, tmp_path: Path, edit, model: str = "tiny", ascii: bool = False) -> Path:
    """A copy of ``model``'s export in tmp_path whose symbol JSON ``edit(doc)`` changed in place
    (written as MXNet writes it: raw UTF-8; with \\u escapes if ``ascii``). Returns the params
    path."""
    shutil.copy(files / f"{model}-0000.params", tmp_path / f"{model}-0000.params")
    doc = json.loads((files / f"{model}-symbol.json").read_text(encoding="utf-8"))
    edit(doc)
    (tmp_path / f"{model}-symbol.json").write_text(json.dumps(doc, ensure_ascii=ascii),
                                                   encoding="utf-8")
    return tmp_path / f"{model}-0000.params"


def _node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def test_non_ascii_names_compile_and_run(files: Path, tmp_path: Path) -> None:
    """MXNet writes non-ASCII names as raw UTF-8 and its JSON reader refuses \\u escapes: trtc
    re-serialized the symbol with them and refused the valid model. Also through a residual
    MXNet stage (--exclude-op), whose symbol the bundle carries."""
    from trtc.runtime import load

    def edit(doc: dict) -> None:
        _node(doc, "tiny_relu0_fwd")["name"] = "tiny_relu0_fwd_é"
        _node(doc, "data")["name"] = "données"

    params = _mutated(files, tmp_path, edit)
    for flags in ([], ["--exclude-op", "Activation"]):
        out = tmp_path / f"m{len(flags)}.trtb"
        result = runner.invoke(app, ["compile", str(params), "-o", str(out), "-q", *flags])
        assert result.exit_code == 0, result.output
        model = load(out, device="cpu")
        feed = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
        (value,) = model(**{"données": feed}).values()
        assert value.shape == (1, 4, 16, 16) and np.isfinite(value).all()


def _legacy(key: str):
    """An edit giving every node's attributes the pre-1.0 key ("attr" or "param")."""
    def edit(doc: dict) -> None:
        for node in doc["nodes"]:
            if "attrs" in node:
                node[key] = node.pop("attrs")
        doc["attrs"] = {"mxnet_version": ["int", 900]}
    return edit


@pytest.mark.parametrize("key", ["attr", "param"])
def test_old_layout_symbol_compiles(files: Path, tmp_path: Path, key: str) -> None:
    """MXNet < 1.0 wrote node attributes under "attr"/"param"; MXNet 1.9 reads them, so trtc
    does (the input's __shape__ is among them: no --input needed)."""
    out = tmp_path / "m.trtb"
    result = runner.invoke(app, ["compile", str(_mutated(files, tmp_path, _legacy(key))), "-o",
                                 str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize("key", ["attr", "param"])
def test_old_layout_num_group_0_is_a_usage_error(files: Path, tmp_path: Path, key: str) -> None:
    """The guard against attributes MXNet divides by sees the old layout too (it was SIGFPE)."""
    def edit(doc: dict) -> None:
        _node(doc, "tiny_conv0_fwd")["attrs"]["num_group"] = "0"
        _legacy(key)(doc)

    _fails(["compile", str(_mutated(files, tmp_path, edit)), "-o", str(tmp_path / "m.trtb"), "-q"],
           2, "tiny_conv0_fwd", "num_group='0' must be positive")


def test_old_layout_keys_merge_as_mxnet_reads_them() -> None:
    from trtc.frontend import _normalize_attrs

    node = {"op": "Activation", "param": {"act_type": "tanh", "x": "1"}, "attrs": {"act_type": "relu"},
            "attr": {"act_type": "sigmoid"}}
    _normalize_attrs(node)
    assert node == {"op": "Activation", "attrs": {"act_type": "sigmoid", "x": "1"}}


def _set(name: str, key: str, value) -> object:  # an edit setting one attribute of one node
    return lambda doc: _node(doc, name)["attrs"].__setitem__(key, value)


@pytest.mark.parametrize("edit,phrases", [
    (_set("tiny_conv0_fwd", "num_filter", 8), ["'tiny_conv0_fwd'", "'num_filter' is 8 (int), not a string"]),
    (_set("tiny_conv0_fwd", "num_filter", None), ["'num_filter' is null, not a string"]),
    (_set("data", "__shape__", "(True, 3, 16, 16)"), ["'(True, 3, 16, 16)' is not a shape", "--input data:"]),
    (_set("tiny_conv0_fwd", "kernel", "(3, 3, 3)"),
     ["MXNet cannot load tiny-symbol.json: Stride must have the same number of dimensions"]),
    (lambda d: d.pop("arg_nodes"), ["has no 'arg_nodes'"]),
    (lambda d: d.update(arg_nodes=[0, 1, 2, 999, -5]), ["'arg_nodes' is not a list of"]),
    (lambda d: d.update(arg_nodes=[0, 3]), ["'arg_nodes' is not a list of"]),  # 3 is an op
    (lambda d: d.update(node_row_ptr=[99, -1, "x"]), ["'node_row_ptr' is not a list of integers"]),
    (lambda d: d.update(attrs={"mxnet_version": ["int", "abc"]}), ['mxnet_version ["int", "abc"] is not']),
    (lambda d: d.update(attrs={"mxnet_version": ["int", 99999999]}), ["mxnet_version", "10901"]),
    (lambda d: d.update(attrs=[1, 2, 3]), ["top-level 'attrs' is not an object"]),
    (lambda d: d.update(heads=[[11, False, 0]]), ["an output ('heads') is not"]),
    (lambda d: _node(d, "tiny_relu0_fwd").update(inputs=[[True, 0, 0]]), ["node 4 is malformed"]),
    (lambda d: _node(d, "tiny_relu0_fwd").update(name="re\x00lu"), ["'re\\x00lu'", "control character"]),
    (lambda d: _node(d, "tiny_relu0_fwd").update(name="tiny_\ud800relu"), ["'tiny_\\ud800relu'", "lone surrogate"]),
    (lambda d: _node(d, "tiny_relu0_fwd").update(op="Custom", attrs={"op_type": "nope"}),
     ["MXNet cannot load tiny-symbol.json: Cannot find custom operator nope", "--import"]),
], ids=["attr_int", "attr_null", "shape_bool", "kernel_rank", "no_arg_nodes", "arg_nodes_range",
        "arg_nodes_op", "row_ptr", "version_str", "version_huge", "top_attrs_list", "heads_bool",
        "inputs_bool", "name_nul", "name_surrogate", "custom_unregistered"])
def test_malformed_symbol_is_one_line_usage_error(files: Path, tmp_path: Path, edit, phrases) -> None:
    """What MXNet's loader refuses with its C++ traceback, or lets through and then crashes on (or
    trtc's own checks did): a one-line error naming the node, attribute or field."""
    params = _mutated(files, tmp_path, edit, ascii=True)
    error = _fails(["compile", str(params), "-o", str(tmp_path / "m.trtb"), "-q"], 2, *phrases)
    assert "Traceback" not in error and "Check failed" not in error


def test_mxnet_said_takes_mxnets_message() -> None:
    from mxnet.base import MXNetError

    from trtc.frontend import mxnet_said

    text = ("Traceback (most recent call last):\n  File \"x\", line 1\nMXNetError: Check failed: "
            "CustomOperator: :Get()->Find(params.op_type) != nullptr: Cannot find custom operator nope")
    assert mxnet_said(MXNetError(text)) == "Cannot find custom operator nope"
    assert mxnet_said(ValueError("first\nsecond")) == "first"


def _params_edited(files: Path, tmp_path: Path, edit) -> Path:
    """A copy of tiny's export whose params ``edit(dict)`` changed (saved with mx.nd.save)."""
    import mxnet as mx

    shutil.copy(files / "tiny-symbol.json", tmp_path / "tiny-symbol.json")
    params = mx.nd.load(str(files / "tiny-0000.params"))
    edit(params)
    mx.nd.save(str(tmp_path / "tiny-0000.params"), params)
    return tmp_path / "tiny-0000.params"


def _rekey(old: str, new: str):
    return lambda p: p.__setitem__(new, p.pop(old))


@pytest.mark.parametrize("edit,phrases", [
    (_rekey("arg:tiny_conv0_weight", "foo:tiny_conv0_weight"),
     ["'foo:tiny_conv0_weight' has the prefix 'foo:'", "'arg:NAME'"]),
    (_rekey("arg:tiny_conv0_weight", "aux:tiny_conv0_weight"),
     ["'aux:tiny_conv0_weight' is an argument", "'arg:tiny_conv0_weight'"]),
    (lambda p: p.__setitem__("tiny_conv0_weight", p["arg:tiny_conv0_weight"]),
     ["holds 'tiny_conv0_weight' twice"]),
], ids=["bogus_prefix", "aux_on_arg", "twice"])
def test_params_keys_are_checked(files: Path, tmp_path: Path, edit, phrases) -> None:
    """A key trtc cannot place was a KeyError (internal error, exit 70) or a failed gate."""
    _fails(["compile", str(_params_edited(files, tmp_path, edit)), "-o", str(tmp_path / "m.trtb"),
            "-q"], 2, *phrases)


def _rename(old: str, new: str):
    return lambda doc: _node(doc, old).__setitem__("name", new)


@pytest.mark.parametrize("edit,phrases", [
    (_rename("data", "da\nta"), ["input name 'da\\nta' holds an unprintable character"]),
    (_rename("data", ""), ["input name '' is empty"]),
    (_rename("data", "x" * 2000), ["is 2,000 characters long", "1..1024"]),
    (_rename("tiny_conv2_fwd", "out\nput"), ["output name 'out\\nput_output'", "rename the node"]),
    (_rename("tiny_conv2_fwd", "o" * 1100), ["output name", "1,107 characters long"]),
], ids=["input_newline", "input_empty", "input_long", "output_newline", "output_long"])
def test_names_the_bundle_refuses_are_refused_when_read(files: Path, tmp_path: Path, edit,
                                                        phrases) -> None:
    """Names the manifest refuses were found only when the bundle was written ("bundle manifest
    is invalid ... recompile the bundle", exit 3): now when the model is read, with the rule
    runtime.bundle uses."""
    _fails(["compile", str(_mutated(files, tmp_path, edit)), "-o", str(tmp_path / "m.trtb"), "-q"],
           2, *phrases)


def test_params_holding_the_input_is_a_usage_error(files: Path, tmp_path: Path) -> None:
    import mxnet as mx

    params = _params_edited(files, tmp_path, lambda p: p.__setitem__("arg:data", mx.nd.ones((1, 3, 16, 16))))
    _fails(["compile", str(params), "-o", str(tmp_path / "m.trtb"), "-q"], 2,
           "no inputs left", "'data'")


@pytest.mark.parametrize("code,phrases", [
    ("import argparse\nargparse.ArgumentParser().add_argument('--epochs', required=True)\n"
     "argparse.ArgumentParser().parse_args(['--bogus'])\n",
     ["called sys.exit(2) (it printed:", "unrecognized arguments: --bogus", "__main__"]),
    ("import sys\nsys.exit(0)\n", ["called sys.exit(0)", "not a script"]),
], ids=["argparse", "exit_0"])
def test_import_of_a_script_that_exits(files: Path, tmp_path: Path, code: str, phrases) -> None:
    """--import of a script that calls sys.exit: argparse's usage text and no trtc error (or
    exit 0 with nothing compiled) before; now one error line quoting what it printed."""
    script = tmp_path / f"script_{len(code)}.py"
    script.write_text(code)
    _fails(["compile", str(files / "tiny-0000.params"), "--import", str(script), "-o",
            str(tmp_path / "m.trtb"), "-q"], 2, *phrases)
    assert not (tmp_path / "m.trtb").exists()


def test_output_naming_a_missing_directory_with_a_slash(files: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o missingdir/` wrote a bundle file named missingdir (a Path drops the slash)."""
    monkeypatch.chdir(tmp_path)
    _fails(["compile", str(files / "tiny-0000.params"), "-o", "missingdir/", "-q"], 2,
           "directory missingdir does not exist", "missingdir/model.trtb")
    assert not (tmp_path / "missingdir").exists()


def test_unprintable_input_name_is_shown_escaped(files: Path, tmp_path: Path) -> None:
    line = _fails(["compile", str(files / "tiny-0000.params"), "--input", "da\x01ta:1x3x16x16", "-o",
                   str(tmp_path / "m.trtb"), "-q"], 2, "--input names 'da\\x01ta'")
    assert "\x01" not in line


def test_non_ascii_digit_dtype_code_is_not_a_crash(files: Path, tmp_path: Path) -> None:
    """'²'.isdigit() is True and int('²') raises: once non-ASCII symbols load, a __dtype__ of '²'
    reached int() (internal error, exit 70). It is no dtype code: float32, as for any other."""
    out = tmp_path / "m.trtb"
    params = _mutated(files, tmp_path, _set("data", "__dtype__", "²"))
    result = runner.invoke(app, ["compile", str(params), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output


def test_control_flow_is_refused_in_one_line(tmp_path: Path) -> None:
    """F.contrib.foreach (ELMo): its loop body is a subgraph that neither mxnet.onnx nor trtc's
    MXNet stages carry; the compile failed deep in the gate ("please report this model")."""
    import mxnet as mx

    class Loop(mx.gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.cell = mx.gluon.rnn.RNNCell(4, input_size=3)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            out, _ = F.contrib.foreach(lambda d, s: self.cell(d, s), x, [F.zeros((2, 4))])
            return out

    params = tiny.export_block(Loop(), tmp_path, "loop", (5, 2, 3))
    _fails(["compile", str(params), "--input", "data:5x2x3", "-o", str(tmp_path / "l.trtb"), "-q"],
           2, "(_foreach) is control flow", "unroll it")
    assert not (tmp_path / "l.trtb").exists()


def test_a_data_dependent_size_is_named(tmp_path: Path) -> None:
    """boolean_mask's output size depends on the data: MXNet infers no shape, and the message
    asked for --input when every input had one."""
    import mxnet as mx

    class Mask(mx.gluon.HybridBlock):
        def hybrid_forward(self, F: Any, x: Any) -> Any:
            return F.contrib.boolean_mask(x, F.sum(x, axis=1) > 0)

    params = tiny.export_block(Mask(), tmp_path, "mask", (4, 6))
    _fails(["compile", str(params), "--input", "data:4x6", "-o", str(tmp_path / "m.trtb"), "-q"],
           2, "(_contrib_boolean_mask) depends on the values of its inputs")
