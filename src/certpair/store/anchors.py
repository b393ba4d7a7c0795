"""The anchor directory: the store's trusted certificates as OpenSSL's hashed directory.

OpenSSL looks trust anchors up in a directory (``load_verify_locations(capath=…)``,
``openssl s_client -CApath``) by the hash of their subject: a file ``<hash>.<n>`` per
certificate, ``n`` counting from 0 among certificates whose subjects hash alike. A
context then reads only the few files it needs for each handshake instead of loading
every peer, so it builds in milliseconds with any number of peers.

The SQLite store stays the single source of truth and the directory is derived from it:

* Every change to the peers table, from any code path or process, marks the changed
  subject hash as *pending* in the same transaction (SQLite triggers; a row written
  without its hash marks ``''``, "hash me").
* After each commit, :func:`sync_anchors` rewrites exactly the pending buckets from the
  store and clears their marks, under a lock file so processes take turns.
* A crash anywhere leaves the marks in place; the next :func:`sync_anchors` (every
  writable :func:`~certpair.store.open_store` runs one) repairs those buckets. A
  missing directory is rebuilt whole.

Only certificates that can never sign another certificate are written (see
:func:`anchor_problem`): a stored peer that breaks that rule is kept in the store,
flagged, and trusted by no context.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

from certpair.profile import CertificateRefused, check_peer_certificate

__all__ = [
    "ANCHORS_DIRECTORY",
    "anchor_problem",
    "in_directory",
    "mark_all_pending",
    "row_hash",
    "subject_hash",
    "sync_anchors",
]

ANCHORS_DIRECTORY = "anchors"
_LOCK = ".lock"
# Rows hashed, or buckets rewritten, per transaction (a rebuild of 100,000 peers).
_BATCH = 2000
# Files of one bucket looked at for a certificate (subjects whose hashes collide: few).
_BUCKET_FILES = 64


def subject_hash(cert_der: bytes) -> str:
    """OpenSSL's subject-name hash (``openssl x509 -hash``) as 8 lowercase hex digits.

    Computed by the OpenSSL that pyOpenSSL links (``X509_subject_name_hash``): the
    canonical name encoding it hashes is OpenSSL's own, so it is not re-implemented here.

    Raises:
        ValueError: the bytes are not a certificate.
    """
    from OpenSSL import crypto  # noqa: PLC0415  # only writers of the directory need it

    try:
        cert = crypto.load_certificate(crypto.FILETYPE_ASN1, cert_der)
    except crypto.Error as exc:
        raise ValueError("not a DER certificate") from exc
    return f"{cert.subject_name_hash():08x}"


@functools.lru_cache(maxsize=4096)
def anchor_problem(cert_der: bytes) -> str | None:
    """Why this stored certificate must not be a trust anchor, or None if it may be.

    It may be one only if it meets the peer profile
    (:func:`certpair.profile.check_peer_certificate`): above all, it can never vouch
    for another certificate. The answer depends on the bytes alone, so it is cached:
    every accepted trusted connection asks it again for the same few certificates.
    """
    try:
        check_peer_certificate(cert_der)
    except CertificateRefused as exc:
        return exc.rule.value
    return None


def in_directory(directory: Path, bucket: str | None, cert_der: bytes) -> bool:
    """Whether ``cert_der`` is one of the files of ``directory``'s bucket ``bucket``.

    Only certificates that meet the peer profile are written there (:func:`anchor_problem`
    decides, as :func:`sync_anchors` writes), and a trusted handshake has just found the
    peer's certificate there: a certificate found there needs no second look, which
    spares a process that only carries trusted connections (a tunnel) from loading
    cryptography to parse it. False sends the caller to :func:`anchor_problem`.
    """
    if not bucket or len(bucket) != 8:
        return False
    for n in range(_BUCKET_FILES):
        try:
            pem = (directory / f"{bucket}.{n}").read_text("ascii")
        except (OSError, UnicodeDecodeError):
            return False  # the end of the bucket, or a file this cannot read
        with contextlib.suppress(ValueError):
            if ssl.PEM_cert_to_DER_cert(pem) == cert_der:
                return True
    return False


def mark_all_pending(db: sqlite3.Connection) -> None:
    """Mark every bucket pending (inside the caller's transaction): a full rebuild."""
    db.execute(
        "INSERT OR REPLACE INTO anchor_pending (subject_hash, token)"
        " SELECT DISTINCT coalesce(subject_hash, ''), randomblob(8) FROM trusted_certs")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; so does the kernel if the process dies


def sync_anchors(db: sqlite3.Connection, directory: Path) -> int:
    """Bring the pending buckets of ``directory`` in line with the store.

    Call it outside any transaction. Safe to run from several processes at once and
    to interrupt anywhere: each bucket is rewritten from one snapshot of the store and
    its mark cleared only if nobody changed the bucket meanwhile.

    Args:
        db: the store's connection (it commits its own small transactions).
        directory: the anchor directory (created 0755 if missing, then rebuilt whole).

    Returns:
        How many buckets were rewritten.

    Raises:
        OSError: the directory cannot be written (the marks stay for the next try).
        sqlite3.Error: the store cannot be read or written.
    """
    if not directory.is_dir():
        directory.mkdir(mode=0o755, exist_ok=True)
        with db:
            mark_all_pending(db)
    if db.execute("SELECT 1 FROM anchor_pending LIMIT 1").fetchone() is None:
        return 0  # the common case: one indexed read, no lock
    rewritten = 0
    with _locked(directory):
        _hash_unhashed(db)
        pending = db.execute("SELECT subject_hash, token FROM anchor_pending").fetchall()
        for start in range(0, len(pending), _BATCH):
            marks = pending[start:start + _BATCH]
            with db:  # one snapshot of these buckets; their marks are cleared by token
                buckets = {bucket: [der for (der,) in db.execute(
                    # Peers and their pending successors (key rotation): store.successors.
                    "SELECT cert_der FROM trusted_certs WHERE subject_hash = ?"
                    " ORDER BY fingerprint",
                    (bucket,))] for bucket, _ in marks}
            for bucket, ders in buckets.items():
                if bucket:
                    _write_bucket(directory, bucket,
                                  [der for der in ders if anchor_problem(der) is None])
                    rewritten += 1
            with db:
                db.executemany(
                    "DELETE FROM anchor_pending WHERE subject_hash = ? AND token = ?", marks)
    return rewritten


def _hash_unhashed(db: sqlite3.Connection) -> None:
    """Give rows written without a subject hash (e.g. by plain SQL) their hash."""
    while rows := db.execute("SELECT fingerprint, cert_der FROM peers"
                             " WHERE subject_hash IS NULL LIMIT ?", (_BATCH,)).fetchall():
        with db:  # the UPDATE trigger marks each new hash pending
            db.executemany("UPDATE peers SET subject_hash = ? WHERE fingerprint = ?",
                           [(row_hash(der), fp) for fp, der in rows])


def row_hash(der: bytes) -> str:
    """The subject hash a peers row stores: :func:`subject_hash`, or ``invalid``."""
    try:
        return subject_hash(der)
    except ValueError:
        return "invalid"  # never a file name OpenSSL reads (not 8 hex digits)


def _write_bucket(directory: Path, bucket: str, ders: list[bytes]) -> None:
    """Make ``<bucket>.0`` … exactly these certificates, in order; remove the rest."""
    if len(bucket) != 8:  # "invalid": unparseable certificates get no file
        return
    for n, der in enumerate(ders):
        path = directory / f"{bucket}.{n}"
        pem = ssl.DER_cert_to_PEM_cert(der).encode("ascii")
        with contextlib.suppress(OSError):
            if path.read_bytes() == pem:
                continue
        tmp = directory / f".{bucket}.{n}.tmp"  # one writer at a time: the lock
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # certificates are public; other tools may read them
            os.write(fd, pem)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    n = len(ders)
    while True:
        try:
            (directory / f"{bucket}.{n}").unlink()
        except FileNotFoundError:
            break
        n += 1
