"""`trtc keygen`, `trtc sign`, `trtc verify`, `trtc compile --sign-key` and what `trtc inspect`
says about signatures: a signed bundle round-trips, anything else is one error line."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import List, Tuple

import pytest
from typer.testing import CliRunner

from bundle_surgery import manifest_of, members_of, repack
from models import tiny
from trtc.cli import app
from trtc.runtime import load

pytest.importorskip("cryptography")
runner = CliRunner()


def _ok(args: List[str]) -> Tuple[str, str]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.stdout, result.stderr


def _fails(args: List[str], code: int, *phrases: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path, str]:
    """(private, public, fingerprint) made by `trtc keygen`."""
    directory = Path(tmp_path_factory.mktemp("cli-keys"))
    private, public = directory / "release.pem", directory / "release.pub"
    stdout, _ = _ok(["keygen", str(private), str(public), "--json"])
    return private, public, json.loads(stdout)["key_fingerprint"]


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.bundle("tiny", tmp_path_factory)


@pytest.fixture
def signed(unsigned: Path, keys: Tuple[Path, Path, str], tmp_path: Path) -> Path:
    path = tmp_path / "signed.trtb"
    shutil.copy(unsigned, path)
    _ok(["sign", str(path), "--key", str(keys[0])])
    return path


def test_keygen_writes_standard_pem_files(keys: Tuple[Path, Path, str]) -> None:
    private, public, fingerprint = keys
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64


def test_keygen_never_overwrites(keys: Tuple[Path, Path, str], tmp_path: Path) -> None:
    before = keys[0].read_bytes()
    _fails(["keygen", str(keys[0]), str(tmp_path / "new.pub")], 2, "exists already")
    assert keys[0].read_bytes() == before and not (tmp_path / "new.pub").exists()


def test_sign_then_verify_round_trip(signed: Path, keys: Tuple[Path, Path, str]) -> None:
    stdout, _ = _ok(["verify", str(signed), "--key", str(keys[1])])
    assert stdout.strip().splitlines() == [f"{signed}: signature OK, ed25519 key {keys[2]}"]
    stdout, _ = _ok(["verify", str(signed), "--key", str(keys[1]), "--json"])
    assert json.loads(stdout) == {"bundle": str(signed), "verified": True,
                                  "algorithm": "ed25519", "key_fingerprint": keys[2]}
    model = load(signed, device="cpu", trusted_keys=[keys[1]])
    assert set(model(**tiny.random_feeds("tiny"))) == set(model.outputs)


def test_sign_output_names_the_key(unsigned: Path, keys: Tuple[Path, Path, str],
                                   tmp_path: Path) -> None:
    path = tmp_path / "b.trtb"
    shutil.copy(unsigned, path)
    stdout, stderr = _ok(["sign", str(path), "--key", str(keys[0]), "--json"])
    assert json.loads(stdout)["key_fingerprint"] == keys[2] and stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.trtb"]  # no temp file left


def test_verify_failures_are_one_line_exit_3(signed: Path, unsigned: Path, tmp_path: Path,
                                             keys: Tuple[Path, Path, str]) -> None:
    other_private, other_public = tmp_path / "o.pem", tmp_path / "o.pub"
    _ok(["keygen", str(other_private), str(other_public)])
    _fails(["verify", str(signed), "--key", str(other_public)], 3, "not a trusted key", keys[2])
    _fails(["verify", str(unsigned), "--key", str(keys[1])], 3, "not signed")
    members = members_of(signed)
    edited = [(n, d[:-1] + bytes([d[-1] ^ 1]) if n == "onnx/engine0.onnx" else d)
              for n, d in members]
    tampered = tmp_path / "tampered.trtb"
    tampered.write_bytes(repack(edited, manifest_of(edited)))
    _fails(["verify", str(tampered), "--key", str(keys[1])], 3, "modified after it was signed")
    result = runner.invoke(app, ["verify", str(tampered), "--key", str(keys[1]), "--json"])
    assert result.exit_code == 3 and json.loads(result.stdout)["exit_code"] == 3
    _fails(["verify", str(tmp_path / "none.trtb"), "--key", str(keys[1])], 3, "no such bundle")


def test_key_mistakes_are_usage_errors(signed: Path, keys: Tuple[Path, Path, str],
                                       tmp_path: Path) -> None:
    _fails(["verify", str(signed), "--key", str(tmp_path / "none.pub")], 2, "no such file")
    _fails(["sign", str(signed), "--key", str(keys[1])], 2, "is it the public key")
    _fails(["verify", str(signed)], 2, "--key")  # typer's own usage error: one line too


def test_inspect_shows_the_signature(signed: Path, unsigned: Path,
                                     keys: Tuple[Path, Path, str]) -> None:
    stdout, _ = _ok(["inspect", str(signed)])
    assert f"signature: ed25519 key {keys[2]}" in stdout
    stdout, _ = _ok(["inspect", str(signed), "--json"])
    assert json.loads(stdout)["signature"] == {"algorithm": "ed25519", "key_fingerprint": keys[2]}
    stdout, _ = _ok(["inspect", str(unsigned)])
    assert "signature: none" in stdout
    assert json.loads(_ok(["inspect", str(unsigned), "--json"])[0])["signature"] is None


def test_compile_sign_key(unsigned: Path, keys: Tuple[Path, Path, str], tmp_path: Path) -> None:
    """compile --sign-key gives the same bytes as compile, then sign (both deterministic)."""
    params = tiny.export("tiny", tmp_path / "model")
    out = tmp_path / "compiled.trtb"
    stdout, _ = _ok(["compile", str(params), "-o", str(out), "--sign-key", str(keys[0]), "-q",
                     "--json"])
    assert json.loads(stdout)["signature"]["key_fingerprint"] == keys[2]
    _ok(["verify", str(out), "--key", str(keys[1])])
    reference = tmp_path / "reference.trtb"
    shutil.copy(unsigned, reference)
    _ok(["sign", str(reference), "--key", str(keys[0])])
    assert out.read_bytes() == reference.read_bytes()


def test_compile_with_a_bad_sign_key_fails_before_compiling(tmp_path: Path,
                                                            keys: Tuple[Path, Path, str]) -> None:
    params = tiny.export("tiny", tmp_path / "model")
    out = tmp_path / "never.trtb"
    _fails(["compile", str(params), "-o", str(out), "-q", "--sign-key", str(tmp_path / "no.pem")],
           2, "no such file")
    _fails(["compile", str(params), "-o", str(out), "-q", "--sign-key", str(keys[1])], 2,
           "private key")
    assert not out.exists()


def test_verify_with_a_private_key_warns(signed: Path, keys: Tuple[Path, Path, str]) -> None:
    """Issue 21: `trtc verify --key PRIVATE.pem` was accepted silently. It still verifies (the
    public half is used) but says, on stderr, that a private key has no place there."""
    stdout, stderr = _ok(["verify", str(signed), "--key", str(keys[0])])
    assert "signature OK" in stdout
    assert f"warning: --key {keys[0]} is a PRIVATE key" in stderr and stderr.count("\n") == 1
