"""Signed bundles at load time: ``load(path, trusted_keys=[...])`` runs only a bundle whose
manifest (which pins every member's sha256) is signed by a trusted Ed25519 key, and checks that
before deserializing anything; without keys, load() behaves as before and never imports
cryptography."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack
from models import tiny
from trtc.runtime import BundleError, UsageError, load
from trtc.runtime.signing import (generate_keypair, key_fingerprint, load_public_key,
                                  sign_bundle, verify_bundle)

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path, Path, Path]:
    """(private, public) of the release key, then (private, public) of another key."""
    directory = Path(tmp_path_factory.mktemp("keys"))
    generate_keypair(directory / "release.pem", directory / "release.pub")
    generate_keypair(directory / "other.pem", directory / "other.pub")
    return (directory / "release.pem", directory / "release.pub", directory / "other.pem",
            directory / "other.pub")


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.bundle("tiny", tmp_path_factory)


@pytest.fixture(scope="module")
def signed(unsigned: Path, keys: Tuple[Path, ...], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("signed")) / "tiny-signed.trtb"
    shutil.copy(unsigned, path)
    sign_bundle(path, keys[0])
    return path


def test_signed_bundle_loads_and_runs_with_its_key(signed: Path, unsigned: Path,
                                                   keys: Tuple[Path, ...]) -> None:
    feeds = tiny.random_feeds("tiny")
    expected = load(unsigned, device="cpu")(**feeds)
    public_pem = keys[1].read_bytes()
    for trusted in ([keys[1]], [str(keys[1])], keys[1], [public_pem], [load_public_key(keys[1])],
                    [keys[3], keys[1]]):  # paths, PEM bytes, key objects, one key alone, any of
        model = load(signed, device="cpu", trusted_keys=trusted)
        got = model(**feeds)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    assert verify_bundle(signed, [keys[1]]) == key_fingerprint(load_public_key(keys[1]))


def test_without_keys_load_is_unchanged(signed: Path) -> None:
    model = load(signed, device="cpu")  # a signed bundle is a valid bundle for everyone
    assert set(model(**tiny.random_feeds("tiny"))) == set(model.outputs)


def test_unsigned_bundle_is_refused_when_keys_are_given(unsigned: Path,
                                                        keys: Tuple[Path, ...]) -> None:
    with pytest.raises(BundleError, match="not signed"):
        load(unsigned, device="cpu", trusted_keys=[keys[1]])


def test_wrong_key_is_refused(signed: Path, keys: Tuple[Path, ...]) -> None:
    with pytest.raises(BundleError, match="not a trusted key"):
        load(signed, device="cpu", trusted_keys=[keys[3]])


def _edited(signed: Path, tmp_path: Path, member: str, edit) -> Path:  # type: ignore[no-untyped-def]
    """``signed`` with ``member`` edited and the manifest's sha256 table recomputed (a forger's
    edit: the checksums alone no longer catch it)."""
    members = members_of(signed)
    edited = [(n, edit(d) if n == member else d) for n, d in members]
    path = tmp_path / "edited.trtb"
    path.write_bytes(repack(edited, manifest_of(edited)))
    return path


@pytest.mark.parametrize("member", ["onnx/engine0.onnx", "engines/engine0.plan"])
def test_one_byte_edit_with_recomputed_checksums_is_refused(signed: Path, tmp_path: Path,
                                                            keys: Tuple[Path, ...],
                                                            member: str) -> None:
    def flip_one_byte(data: bytes) -> bytes:
        at = len(data) * 3 // 4
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]

    path = _edited(signed, tmp_path, member, flip_one_byte)
    from trtc.runtime.bundle import read_bundle

    read_bundle(path)  # the checksums alone accept it: they only catch accidents
    with pytest.raises(BundleError, match="modified after it was signed"):
        load(path, device="cpu", trusted_keys=[keys[1]])


def test_signature_is_checked_before_anything_is_deserialized(signed: Path, tmp_path: Path,
                                                              keys: Tuple[Path, ...],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An ONNX member replaced by junk (checksums recomputed) is refused for its signature, and
    no stage is built: select_device, the first step that touches members, is never reached."""
    import trtc.runtime.model as model_module

    path = _edited(signed, tmp_path, "onnx/engine0.onnx", lambda data: b"junk" * 10)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bundle was used before its signature was checked")

    monkeypatch.setattr(model_module, "select_device", must_not_run)
    monkeypatch.setattr(model_module, "Model", must_not_run)
    with pytest.raises(BundleError, match="signed"):
        load(path, device="cpu", trusted_keys=[keys[1]])


def test_forged_signature_claiming_the_trusted_key_is_refused(signed: Path, tmp_path: Path,
                                                              keys: Tuple[Path, ...]) -> None:
    """Re-signed with another key but claiming the trusted key's fingerprint."""
    from cryptography.hazmat.primitives import serialization

    other = serialization.load_pem_private_key(keys[2].read_bytes(), password=None)
    manifest_bytes = dict(members_of(signed))["manifest.json"]
    forged_signature = base64.b64encode(other.sign(manifest_bytes)).decode()

    def forge(data: bytes) -> bytes:
        record = json.loads(data)
        record["signature"] = forged_signature
        return json.dumps(record).encode()

    path = _edited(signed, tmp_path, "signature.json", forge)
    with pytest.raises(BundleError, match="signature does not match"):
        load(path, device="cpu", trusted_keys=[keys[1]])
    assert verify_bundle(path, [keys[3]]) == key_fingerprint(load_public_key(keys[3]))


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": "trtc-signature"}',
                                     b'{"format": "trtc-signature", "version": 1, '
                                     b'"algorithm": "rsa"}'])
def test_malformed_signature_member_is_a_bundle_error(signed: Path, tmp_path: Path,
                                                      keys: Tuple[Path, ...],
                                                      content: bytes) -> None:
    path = _edited(signed, tmp_path, "signature.json", lambda data: content)
    with pytest.raises(BundleError, match="signature"):
        load(path, device="cpu", trusted_keys=[keys[1]])
    load(path, device="cpu")  # without keys the signature member is not read


def test_bad_trusted_keys_are_usage_errors(signed: Path, tmp_path: Path,
                                           keys: Tuple[Path, ...]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "junk.pem").write_text("not a key")
    os.mkfifo(tmp_path / "fifo.pub")  # reading it would block forever: refused unopened
    cases = {"empty": ([], "empty"), "missing file": ([tmp_path / "none.pub"], "no such file"),
             "fifo": ([tmp_path / "fifo.pub"], "not a regular file"),
             "directory": ([tmp_path], "is a directory"),
             "junk": ([tmp_path / "junk.pem"], "not a PEM"), "rsa": ([rsa_pem], "Ed25519"),
             "number": ([42], "Ed25519 public key"), "not a list": (42, "list of public keys")}
    for label, (trusted, phrase) in cases.items():
        with pytest.raises(UsageError, match=phrase):
            load(signed, device="cpu", trusted_keys=trusted)


def test_signing_is_deterministic_and_keeps_every_member(unsigned: Path, signed: Path,
                                                         tmp_path: Path,
                                                         keys: Tuple[Path, ...]) -> None:
    again = tmp_path / "again.trtb"
    shutil.copy(unsigned, again)
    assert sign_bundle(again, keys[0]) == verify_bundle(signed, keys[1])
    assert again.read_bytes() == signed.read_bytes()  # Ed25519 is deterministic
    sign_bundle(again, keys[0])  # re-signing replaces the signature: same bytes
    assert again.read_bytes() == signed.read_bytes()
    original, result = members_of(unsigned), members_of(signed)
    assert result[:-1] == original and result[-1][0] == "signature.json"
    with zipfile.ZipFile(unsigned) as a, zipfile.ZipFile(signed) as b:
        for left, right in zip(a.infolist(), b.infolist()):
            assert (left.filename, left.date_time, left.external_attr) == \
                (right.filename, right.date_time, right.external_attr)
    sign_bundle(again, keys[2])  # another key: another signature, members untouched
    assert members_of(again)[:-1] == original
    assert verify_bundle(again, [keys[3]]) == key_fingerprint(load_public_key(keys[3]))


def test_sign_refuses_a_damaged_bundle_and_leaves_it(unsigned: Path, tmp_path: Path,
                                                     keys: Tuple[Path, ...]) -> None:
    data = unsigned.read_bytes()
    path = tmp_path / "damaged.trtb"
    path.write_bytes(data[:-3000] + bytes([data[-3000] ^ 0xFF]) + data[-2999:])
    before = path.read_bytes()
    with pytest.raises(BundleError):
        sign_bundle(path, keys[0])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.trtb"]  # no temp file left


_BLOCK_CRYPTOGRAPHY = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "cryptography":
                raise ImportError("cryptography is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_cryptography_is_imported_only_when_keys_are_given(signed: Path,
                                                           keys: Tuple[Path, ...]) -> None:
    code = _BLOCK_CRYPTOGRAPHY + textwrap.dedent(
        f"""
        import trtc.runtime as rt
        rt.load({str(signed)!r}, device="cpu")
        assert "cryptography" not in sys.modules
        try:
            rt.load({str(signed)!r}, device="cpu", trusted_keys=[{str(keys[1])!r}])
        except rt.IncompatibleError as exc:
            print("refused:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "pip install 'trtc[sign]'" in proc.stdout


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_signed_bundle_with_a_replaced_unread_member_is_refused(signed: Path, tmp_path: Path,
                                                                 keys: Tuple[Path, ...],
                                                                 device: str) -> None:
    """Issue 21: the engine plan replaced by other bytes of the same size, the signature and the
    manifest untouched. The CPU path never reads the plan, so lazy loading used to run the
    bundle; with trusted_keys, every member the signed manifest pins is checked first (`trtc
    verify` refuses it too). Without keys the CPU path still runs it: the checksums of what it
    reads are right, and checksums alone promise no more."""
    import zipfile as zf

    plan = "engines/engine0.plan"
    with zf.ZipFile(signed) as archive:
        info = archive.getinfo(plan)
    data = bytearray(signed.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + info.file_size] = bytes(info.file_size)  # zeros, same size
    path = tmp_path / "replaced.trtb"
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"checksum mismatch in member '{plan}'"):
        load(path, device=device, trusted_keys=[keys[1]])
    assert load(path, device="cpu").device == "cpu"
    from trtc.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["verify", str(path), "--key", str(keys[1])])
    assert result.exit_code != 0
