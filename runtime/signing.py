"""Signed bundles: an Ed25519 signature over the manifest, which pins every member's sha256.

Without a key a bundle's checksums only catch accidents (a truncated download, a flipped bit):
anyone who edits a member can recompute its sha256 in the manifest. A signature closes that gap
for release pipelines: ``trtc sign`` adds a ``signature.json`` member holding an Ed25519 signature
(RFC 8032) of the exact ``manifest.json`` bytes, and ``load(path, trusted_keys=[...])`` /
``trtc verify`` refuse a bundle whose manifest was not signed by one of the trusted keys. Since
the reader has already checked every member against the manifest's sha256 table, a valid
signature covers every byte the runtime uses.

The signature member (schema ``trtc-signature`` v1)::

    {"format": "trtc-signature", "version": 1, "algorithm": "ed25519",
     "signed_member": "manifest.json", "manifest_sha256": HEX,
     "key_fingerprint": "sha256:HEX", "signature": BASE64}

``key_fingerprint`` is the sha256 of the public key's DER SubjectPublicKeyInfo, the same as
``openssl pkey -pubin -in PUBLIC.pem -outform DER | sha256sum``; the signature can be checked
without trtc: ``openssl pkeyutl -verify -pubin -inkey PUBLIC.pem -rawin -in manifest.json
-sigfile SIG.bin``. Ed25519 signatures are deterministic, so signing the same bundle with the
same key always gives the same bytes.

Keys are standard PEM files (PKCS#8 private, SubjectPublicKeyInfo public). Why not the OpenSSF
``model-signing`` package: its key-based signing pulls in sigstore (about twenty packages),
accepts only ECDSA keys, and writes a detached signature file beside a model directory rather
than inside one artifact. Only this module imports ``cryptography``, and only when a key is
used: loading without ``trusted_keys`` never imports it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from .bundle import (MAGIC_BYTES, MAGIC_MEMBER, MANIFEST_MEMBER, SIGNATURE_MEMBER, Bundle,
                     partial_path, read_bundle)
from .errors import BundleError, IncompatibleError, UsageError

__all__ = [
    "SIGNATURE_MEMBER",
    "KeySource",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "key_fingerprint",
    "sign_bundle",
    "verify_bundle",
    "signature_info",
]

SIGNATURE_FORMAT = "trtc-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_KEY_FILE_BYTES = 64 * 1024
# Encrypted private keys: the passphrase comes from this environment variable.
PASSWORD_ENV = "TRTC_SIGN_KEY_PASSWORD"

# A key given to trtc: a PEM file's path, PEM bytes, or a cryptography Ed25519 key object.
KeySource = Union[str, "os.PathLike[str]", bytes, Any]


def _crypto() -> Any:
    """The cryptography Ed25519 module, or an error saying how to install it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise IncompatibleError("signed bundles need the cryptography package: "
                                "pip install 'trtc[sign]' (or cryptography)") from None
    return ed25519


# ----------------------------------------------------------------------------------------------
# Keys
# ----------------------------------------------------------------------------------------------
def _pem_from(source: KeySource, what: str) -> Tuple[bytes, str]:
    """(PEM bytes, a label for messages) of a path or PEM bytes."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), f"the {what} given as bytes"
    path = os.fspath(source)
    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; fstat() then
        # refuses everything that is not a regular file before a byte is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UsageError(f"{what} {path}: not a regular file; pass the PEM key file "
                                 "trtc keygen wrote")
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path}: is a directory, not a PEM key file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UsageError(f"{what} {path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a PEM key")
    return data, f"{what} {path}"


def _is_key_object(source: Any) -> bool:
    return not isinstance(source, (str, bytes, bytearray, os.PathLike))


def load_private_key(source: KeySource) -> Any:
    """An Ed25519 private key from a PEM file path, PEM bytes or a key object.

    An encrypted PEM is decrypted with the passphrase in ``$TRTC_SIGN_KEY_PASSWORD``.

    Raises:
        UsageError: missing or unreadable file, not a PEM private key, not Ed25519, or encrypted
            without a (correct) passphrase.
        IncompatibleError: cryptography is not installed.
    """
    ed25519 = _crypto()
    if _is_key_object(source):
        if isinstance(source, ed25519.Ed25519PrivateKey):
            return source
        raise UsageError(f"signing needs an Ed25519 private key, got {type(source).__name__}")
    from cryptography.hazmat.primitives import serialization

    data, label = _pem_from(source, "private key")
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=password.encode() if password
                                                 else None)
    except TypeError:  # encrypted without a password, or a password for an unencrypted key
        raise UsageError(f"{label}: the key is encrypted; put its passphrase in ${PASSWORD_ENV}"
                         if not password else f"{label}: the key is not encrypted; unset "
                         f"${PASSWORD_ENV}") from None
    except ValueError as exc:
        hint = (" (is it the public key? signing needs the private one)"
                if b"PUBLIC KEY" in data else "")
        raise UsageError(f"{label}: not a PEM private key{hint} ({_first_line(exc)})") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and friends
        raise UsageError(f"{label}: cannot load the key ({_first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"{label}: a {_key_kind(key)} key; trtc signs with Ed25519 keys "
                         "(make one with `trtc keygen PRIVATE.pem PUBLIC.pem`)")
    return key


def load_public_key(source: KeySource) -> Any:
    """An Ed25519 public key from a PEM file path, PEM bytes or a key object. A private key (PEM
    or object) is accepted too; its public half is used.

    Raises:
        UsageError: missing or unreadable file, not a PEM key, or not Ed25519.
        IncompatibleError: cryptography is not installed.
    """
    ed25519 = _crypto()
    if _is_key_object(source):
        if isinstance(source, ed25519.Ed25519PublicKey):
            return source
        if isinstance(source, ed25519.Ed25519PrivateKey):
            return source.public_key()
        raise UsageError(f"a trusted key must be an Ed25519 public key (a PEM file path, PEM "
                         f"bytes or a key object), got {type(source).__name__}")
    from cryptography.hazmat.primitives import serialization

    data, label = _pem_from(source, "public key")
    if b"PRIVATE KEY" in data:
        return load_private_key(data).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"{label}: not a PEM public key ({_first_line(exc)})") from None
    except Exception as exc:
        raise UsageError(f"{label}: cannot load the key ({_first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UsageError(f"{label}: a {_key_kind(key)} key; trtc bundles are signed with "
                         "Ed25519 keys")
    return key


def key_fingerprint(public_key: Any) -> str:
    """``sha256:HEX`` of the key's DER SubjectPublicKeyInfo (openssl's DER form of PUBLIC.pem)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def generate_keypair(private_path: "os.PathLike[str] | str",
                     public_path: "os.PathLike[str] | str") -> str:
    """Write a new Ed25519 key pair as PEM files; the private one readable by its owner only.
    Existing files are never overwritten. Returns the public key's fingerprint.

    Raises:
        UsageError: a file exists already, or its directory does not.
    """
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    private_path, public_path = os.fspath(private_path), os.fspath(public_path)
    if os.path.abspath(private_path) == os.path.abspath(public_path):
        raise UsageError("the private and public key files must be two different files")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise UsageError(f"{path} exists already; keys are never overwritten (remove it or "
                             "choose another name)")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"{path}: directory {directory} does not exist; create it first")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    written: List[str] = []
    try:
        for path, data, mode in ((private_path, private_pem, 0o600),
                                 (public_path, public_pem, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except OSError as exc:
        for path in written:
            os.unlink(path)
        raise UsageError(f"cannot write the key files: {exc.strerror} ({exc.filename})") from None
    return key_fingerprint(key.public_key())


# ----------------------------------------------------------------------------------------------
# Reading the signed bytes
# ----------------------------------------------------------------------------------------------
def _raw_members(bundle: Bundle) -> Tuple[bytes, Optional[bytes], List[zipfile.ZipInfo]]:
    """The exact manifest bytes, the signature member's bytes (None if unsigned) and the archive
    entries of an opened bundle, re-read from its file and tied to what the reader parsed: the
    manifest read here must be the one ``bundle`` holds (so a file swapped in between is caught).
    """
    try:
        with zipfile.ZipFile(bundle.path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if names.count(MANIFEST_MEMBER) != 1 or names.count(SIGNATURE_MEMBER) > 1:
                raise BundleError(f"{bundle.path}: the file changed while it was being read")
            manifest_bytes = zf.read(MANIFEST_MEMBER)
            signature = None
            if SIGNATURE_MEMBER in names:
                info = zf.getinfo(SIGNATURE_MEMBER)
                if info.file_size > MAX_SIGNATURE_BYTES:
                    raise BundleError(f"{bundle.path}: the signature member is larger than "
                                      f"{MAX_SIGNATURE_BYTES} bytes; not a trtc signature")
                signature = zf.read(info)
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError) as exc:
        raise BundleError(f"{bundle.path}: cannot read the bundle's signature "
                          f"({_first_line(exc)}); download or compile it again") from None
    try:
        same = json.loads(manifest_bytes.decode("utf-8")) == bundle.manifest
    except (UnicodeError, ValueError, RecursionError):
        same = False
    if not same:
        raise BundleError(f"{bundle.path}: the file changed while it was being read; "
                          "load it again")
    return manifest_bytes, signature, infos


def _parse_signature(path: str, raw: bytes) -> Dict[str, Any]:
    def bad(what: str) -> BundleError:
        return BundleError(f"{path}: malformed signature member ({what}); sign the bundle "
                           "again with `trtc sign`")

    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(record, dict):
        raise bad("not a JSON object")
    if record.get("format") != SIGNATURE_FORMAT:
        raise bad(f"format is not '{SIGNATURE_FORMAT}'")
    if record.get("version") != SIGNATURE_VERSION:
        raise bad(f"version {str(record.get('version'))[:20]}; this trtc reads version "
                  f"{SIGNATURE_VERSION}")
    if record.get("algorithm") != ALGORITHM:
        raise bad(f"algorithm {str(record.get('algorithm'))[:20]!r}; trtc verifies {ALGORITHM}")
    for key in ("manifest_sha256", "key_fingerprint", "signature"):
        if not isinstance(record.get(key), str) or len(record[key]) > 200:
            raise bad(f"field '{key}' missing or not a short string")
    try:
        signature = base64.b64decode(record["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise bad("signature is not base64") from None
    if len(signature) != 64:
        raise bad("an Ed25519 signature has 64 bytes")
    record["signature_bytes"] = signature
    return record


def signature_info(bundle: Bundle) -> Optional[Dict[str, str]]:
    """Who signed ``bundle``, as the signature claims (NOT verified; needs no cryptography):
    ``{"algorithm", "key_fingerprint"}``, ``{"error": why}`` for a malformed signature member,
    or None for an unsigned bundle."""
    try:
        _, raw, _ = _raw_members(bundle)
        if raw is None:
            return None
        record = _parse_signature(bundle.path, raw)
    except BundleError as exc:
        return {"error": str(exc)}
    return {"algorithm": record["algorithm"], "key_fingerprint": record["key_fingerprint"]}


# ----------------------------------------------------------------------------------------------
# Sign and verify
# ----------------------------------------------------------------------------------------------
def _as_key_list(keys: Any) -> List[Any]:
    """``trusted_keys`` as a list; one key given alone (a path, PEM bytes, a key) is a list of one."""
    if isinstance(keys, (str, bytes, bytearray, os.PathLike)) or any(
            hasattr(keys, attr) for attr in ("public_bytes", "private_bytes")):
        return [keys]
    try:
        return list(keys)
    except TypeError:
        raise UsageError("trusted_keys must be a list of public keys, got "
                         f"{type(keys).__name__}") from None


def verify_bundle(bundle: "Bundle | os.PathLike[str] | str",
                  trusted_keys: Union[KeySource, Iterable[KeySource]]) -> str:
    """Check that ``bundle``'s manifest is signed by one of ``trusted_keys``.

    The reader has already checked every member against the manifest's sha256 table, so a valid
    signature covers every member. Call this before deserializing anything from the bundle.

    Args:
        bundle: an opened :class:`Bundle` or a bundle path.
        trusted_keys: public keys (PEM paths, PEM bytes or key objects); one key alone is fine.

    Returns:
        The fingerprint (``sha256:HEX``) of the key that signed it.

    Raises:
        BundleError: unsigned, signed by an untrusted key, or modified after signing.
        UsageError: no keys, or a key that cannot be loaded.
        IncompatibleError: cryptography is not installed.
    """
    keys = _as_key_list(trusted_keys)
    if not keys:
        raise UsageError("trusted_keys is empty: give at least one public key (or None to "
                         "load without checking a signature)")
    public_keys = [load_public_key(k) for k in keys]
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    from cryptography.exceptions import InvalidSignature

    manifest_bytes, raw, _ = _raw_members(bundle)
    if raw is None:
        raise BundleError(f"{bundle.path}: the bundle is not signed, and a signature by a trusted "
                          "key is required; sign it with `trtc sign BUNDLE --key PRIVATE.pem`")
    record = _parse_signature(bundle.path, raw)
    by_fingerprint = {key_fingerprint(k): k for k in public_keys}
    claimed = record["key_fingerprint"]
    # The claimed fingerprint only picks the key to try first; the signature itself decides.
    order = sorted(by_fingerprint.items(), key=lambda item: item[0] != claimed)
    for fingerprint, key in order:
        try:
            key.verify(record["signature_bytes"], manifest_bytes)
            return fingerprint
        except InvalidSignature:
            continue
    if claimed not in by_fingerprint:
        raise BundleError(f"{bundle.path}: signed by key {_clip(claimed)}, which is not a trusted "
                          f"key (trusted: {', '.join(sorted(by_fingerprint))})")
    if record["manifest_sha256"] != hashlib.sha256(manifest_bytes).hexdigest():
        raise BundleError(f"{bundle.path}: the bundle was modified after it was signed (its "
                          "manifest differs from the signed one); refusing a tampered bundle")
    raise BundleError(f"{bundle.path}: the signature does not match the bundle's manifest; "
                      "refusing a tampered or forged bundle")


def sign_bundle(path: "os.PathLike[str] | str", key: KeySource) -> str:
    """Sign the bundle at ``path`` in place with an Ed25519 private key.

    The bundle is verified first (every member's sha256, never signing a damaged file), then
    rewritten to a temp file beside it, fsynced, and renamed over it: a failure or kill leaves
    the original untouched. Every member keeps its bytes, order and ZIP metadata; an existing
    signature is replaced. Signing the same bundle with the same key gives the same bytes.

    Args:
        path: the ``.trtb`` file (a verified temp file, when called by the compiler).
        key: the private key (PEM file path, PEM bytes or key object).

    Returns:
        The fingerprint (``sha256:HEX``) of the signing key's public half.

    Raises:
        UsageError: the key cannot be loaded, or the file cannot be written.
        BundleError: the file is not an intact bundle.
        IncompatibleError: cryptography is not installed.
    """
    private_key = load_private_key(key)
    fingerprint = key_fingerprint(private_key.public_key())
    target = os.path.realpath(os.fspath(path))
    bundle = read_bundle(target)
    manifest_bytes, _, infos = _raw_members(bundle)
    record = {
        "format": SIGNATURE_FORMAT,
        "version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "signed_member": MANIFEST_MEMBER,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "key_fingerprint": fingerprint,
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    signature_bytes = json.dumps(record, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    contents = {MAGIC_MEMBER: MAGIC_BYTES, MANIFEST_MEMBER: manifest_bytes}
    entries = [i for i in infos if i.filename != SIGNATURE_MEMBER]
    template = next(i for i in infos if i.filename == MANIFEST_MEMBER)
    try:
        mode = os.stat(target).st_mode & 0o777
        tmp = partial_path(target)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for info in entries:
                    data = contents.get(info.filename)
                    _write_like(zf, info, info.filename,
                                data if data is not None else bundle.read_member(info.filename))
                _write_like(zf, template, SIGNATURE_MEMBER, signature_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return fingerprint


def _write_like(zf: zipfile.ZipFile, template: zipfile.ZipInfo, name: str, data: bytes) -> None:
    """Write member ``name`` with ``template``'s metadata (the bundle writer's fixed values)."""
    info = zipfile.ZipInfo(name, date_time=template.date_time)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = template.create_system
    info.external_attr = template.external_attr
    zf.writestr(info, data)


def _key_kind(key: Any) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "") or "non-Ed25519"


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
