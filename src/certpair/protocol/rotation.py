"""The sync exchange: each side may tell the other its key rotation, sans-I/O.

Runs on a trusted mutual-TLS connection, symmetric: both sides are a
:class:`SyncSession`. Each sends HELLO (a fresh nonce), then on the other's HELLO one
STATEMENT (nothing, or a rotation signed over the other's nonce), then on the other's
STATEMENT one ANSWER. From either side the peer's frames arrive in that order::

    A -> B  HELLO(nonce_a)            B -> A  HELLO(nonce_b)
    A -> B  STATEMENT(over nonce_b)   B -> A  STATEMENT(over nonce_a)
    A -> B  ANSWER(result)            B -> A  ANSWER(result)

A rotation statement names the new certificate and carries two signatures over the
same transcript, ``lv_cat(label, kind, cert_old, cert_new, cert_verifier, nonce_v)``:
one by the current key (label :data:`OLD_KEY_LABEL`) and one by the new key
(:data:`NEW_KEY_LABEL`). ``cert_old`` and ``cert_verifier`` are the certificates of
this very TLS connection and ``nonce_v`` the verifier's fresh nonce, so a statement
from another connection, or for another verifier, does not verify. The standard
library's ``ssl`` has no TLS exporter; this binding needs none (docs/PROTOCOL.md §8).

A checked rotation becomes a :class:`RotationOffered` event; the driver checks what
only it can see (the store, the certificate profile), commits, and only then calls
:meth:`SyncSession.accept` (or :meth:`SyncSession.refuse`), which queues the ANSWER:
an ACCEPTED answer is the final acknowledgement that the successor is stored.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certpair.protocol.cpace import lv_cat
from certpair.protocol.frames import ProtocolError
from certpair.protocol.sync_frames import (
    StatementKind,
    SyncFrame,
    SyncFrameDecoder,
    SyncFrameType,
    SyncResult,
    encode_sync_frame,
)

__all__ = [
    "NEW_KEY_LABEL",
    "OLD_KEY_LABEL",
    "Answered",
    "RotationOffered",
    "RotationToTell",
    "SignatureInvalid",
    "StatementRefused",
    "SyncDone",
    "SyncEvent",
    "SyncFailed",
    "SyncSession",
    "SyncState",
    "decode_rotation",
    "encode_rotation",
    "rotation_transcript",
    "sign_rotation",
    "verify_rotation",
]

OLD_KEY_LABEL = b"certpair/1 rotation: current key"
NEW_KEY_LABEL = b"certpair/1 rotation: new key"
NONCE_SIZE = 32
_MAX_SIGNATURE = 255
SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class SignatureInvalid(Exception):
    """A rotation signature does not verify (any cause alike)."""


class SyncState(enum.Enum):
    """States of a sync session."""

    START = "start"
    AWAIT_HELLO = "await_hello"
    AWAIT_STATEMENT = "await_statement"
    AWAIT_VERDICT = "await_verdict"
    AWAIT_ANSWER = "await_answer"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RotationToTell:
    """This side's pending rotation: both keys and the new certificate (DER)."""

    old_key: SigningKey = field(repr=False)
    new_key: SigningKey = field(repr=False)
    new_cert: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class RotationOffered:
    """The peer's rotation statement verified; the driver must accept or refuse it."""

    new_cert: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class StatementRefused:
    """This side refused the peer's statement by itself (signature or kind)."""

    result: SyncResult


@dataclass(frozen=True, kw_only=True)
class Answered:
    """The peer answered this side's statement; ``told`` says whether it was a rotation."""

    result: SyncResult
    told: bool


@dataclass(frozen=True, kw_only=True)
class SyncDone:
    """Both statements are answered."""


@dataclass(frozen=True, kw_only=True)
class SyncFailed:
    """The peer broke the format or the order; the session is over."""

    reason: str


SyncEvent = RotationOffered | StatementRefused | Answered | SyncDone | SyncFailed


def rotation_transcript(label: bytes, *, cert_old: bytes, cert_new: bytes,
                        cert_verifier: bytes, nonce: bytes) -> bytes:
    """What a rotation signature covers (docs/PROTOCOL.md §8)."""
    return lv_cat(label, bytes([StatementKind.ROTATION]), cert_old, cert_new, cert_verifier,
                  nonce)


def _sign(key: SigningKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def _verify(cert_der: bytes, signature: bytes, data: bytes) -> None:
    try:
        public = x509.load_der_x509_certificate(cert_der).public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(
                public.curve, ec.SECP256R1):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignatureInvalid
    except (ValueError, InvalidSignature):
        raise SignatureInvalid from None


def sign_rotation(rotation: RotationToTell, *, cert_old: bytes, cert_verifier: bytes,
                  nonce: bytes) -> tuple[bytes, bytes]:
    """Return (signature by the current key, signature by the new key)."""
    parts = {"cert_old": cert_old, "cert_new": rotation.new_cert,
             "cert_verifier": cert_verifier, "nonce": nonce}
    return (_sign(rotation.old_key, rotation_transcript(OLD_KEY_LABEL, **parts)),
            _sign(rotation.new_key, rotation_transcript(NEW_KEY_LABEL, **parts)))


def verify_rotation(*, cert_old: bytes, cert_new: bytes, cert_verifier: bytes, nonce: bytes,
                    sig_old: bytes, sig_new: bytes) -> None:
    """Check both signatures of a rotation statement.

    Raises:
        SignatureInvalid: either signature fails, for whatever reason.
    """
    parts = {"cert_old": cert_old, "cert_new": cert_new, "cert_verifier": cert_verifier,
             "nonce": nonce}
    _verify(cert_old, sig_old, rotation_transcript(OLD_KEY_LABEL, **parts))
    _verify(cert_new, sig_new, rotation_transcript(NEW_KEY_LABEL, **parts))


def encode_rotation(cert_new: bytes, sig_old: bytes, sig_new: bytes) -> bytes:
    """STATEMENT body of a rotation: kind, u16 + cert, u8 + sig_old, u8 + sig_new."""
    if len(sig_old) > _MAX_SIGNATURE or len(sig_new) > _MAX_SIGNATURE:
        raise ValueError("signature too long")
    return (bytes([StatementKind.ROTATION]) + struct.pack(">H", len(cert_new)) + cert_new
            + bytes([len(sig_old)]) + sig_old + bytes([len(sig_new)]) + sig_new)


def decode_rotation(body: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a rotation STATEMENT body into (cert_new, sig_old, sig_new).

    Raises:
        ProtocolError: the lengths do not add up exactly.
    """
    rest = body[1:]
    parts: list[bytes] = []
    for size in (2, 1, 1):
        if len(rest) < size:
            raise ProtocolError("truncated rotation statement")
        length = int.from_bytes(rest[:size], "big")
        if length == 0 or len(rest) < size + length:
            raise ProtocolError("truncated rotation statement")
        parts.append(rest[size:size + length])
        rest = rest[size + length:]
    if rest:
        raise ProtocolError("trailing bytes in rotation statement")
    return parts[0], parts[1], parts[2]


class SyncSession:
    """One side of a sync exchange (both sides run the same machine)."""

    def __init__(self, *, own_cert: bytes, peer_cert: bytes, nonce: bytes,
                 rotation: RotationToTell | None = None) -> None:
        """Create one side's machine.

        Args:
            own_cert: this side's certificate as sent on this connection (DER).
            peer_cert: the peer's certificate as observed on this connection (DER).
            nonce: 32 fresh random bytes (from ``secrets`` in production).
            rotation: this side's pending rotation to tell, or None to say nothing.

        Raises:
            ValueError: a nonce that is not 32 bytes (a local error).
        """
        if len(nonce) != NONCE_SIZE:
            raise ValueError("the nonce is 32 bytes")
        self.own_cert, self.peer_cert = own_cert, peer_cert
        self._nonce = nonce
        self.rotation = rotation
        self.state = SyncState.START
        self._decoder = SyncFrameDecoder()
        self._out = bytearray()

    @property
    def finished(self) -> bool:
        """Whether the session reached DONE or FAILED."""
        return self.state in (SyncState.DONE, SyncState.FAILED)

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def start(self) -> None:
        """Queue HELLO."""
        if self.state is not SyncState.START:
            raise RuntimeError("start() called twice")
        self._out += encode_sync_frame(SyncFrameType.HELLO, self._nonce)
        self.state = SyncState.AWAIT_HELLO

    def receive_data(self, data: bytes) -> list[SyncEvent]:
        """Feed bytes from the peer; returns the events they cause.

        After :class:`RotationOffered`, later frames wait until the driver's verdict.
        """
        if self.finished:
            raise RuntimeError(f"sync session is {self.state.value}; no more input")
        self._decoder.feed(data)
        return self._run()

    def accept(self) -> list[SyncEvent]:
        """The driver stored the successor: answer ACCEPTED (the final acknowledgement)."""
        return self.refuse(SyncResult.ACCEPTED)

    def refuse(self, result: SyncResult) -> list[SyncEvent]:
        """Answer the offered rotation with ``result`` and go on with buffered frames."""
        if self.state is not SyncState.AWAIT_VERDICT:
            raise RuntimeError("no rotation is waiting for a verdict")
        self._answer(result)
        return self._run()

    def connection_lost(self) -> SyncFailed | None:
        """The connection ended; returns SyncFailed unless the session was finished."""
        if self.finished:
            return None
        self.state = SyncState.FAILED
        return SyncFailed(reason="connection lost")

    def _run(self) -> list[SyncEvent]:
        events: list[SyncEvent] = []
        try:
            while not self.finished and self.state is not SyncState.AWAIT_VERDICT:
                frame = self._decoder.next_frame()
                if frame is None:
                    break
                handler = self._table.get((self.state, frame.type))
                if handler is None:
                    raise ProtocolError("unexpected frame")
                events += handler(self, frame)
        except ProtocolError as exc:
            self.state = SyncState.FAILED
            events.append(SyncFailed(reason=str(exc)))
        return events

    def _answer(self, result: SyncResult) -> None:
        self._out += encode_sync_frame(SyncFrameType.ANSWER, bytes([result]))
        self.state = SyncState.AWAIT_ANSWER

    def _on_hello(self, frame: SyncFrame) -> list[SyncEvent]:
        if frame.body == self._nonce:
            raise ProtocolError("reflected nonce")
        if self.rotation is None:
            body = bytes([StatementKind.NOTHING])
        else:
            sig_old, sig_new = sign_rotation(self.rotation, cert_old=self.own_cert,
                                             cert_verifier=self.peer_cert, nonce=frame.body)
            body = encode_rotation(self.rotation.new_cert, sig_old, sig_new)
        self._out += encode_sync_frame(SyncFrameType.STATEMENT, body)
        self.state = SyncState.AWAIT_STATEMENT
        return []

    def _on_statement(self, frame: SyncFrame) -> list[SyncEvent]:
        kind = frame.body[0]
        if kind == StatementKind.NOTHING:
            if len(frame.body) != 1:
                raise ProtocolError("trailing bytes in an empty statement")
            self._answer(SyncResult.ACCEPTED)
            return []
        if kind != StatementKind.ROTATION:
            self._answer(SyncResult.UNSUPPORTED)
            return [StatementRefused(result=SyncResult.UNSUPPORTED)]
        cert_new, sig_old, sig_new = decode_rotation(frame.body)
        try:
            verify_rotation(cert_old=self.peer_cert, cert_new=cert_new,
                            cert_verifier=self.own_cert, nonce=self._nonce,
                            sig_old=sig_old, sig_new=sig_new)
        except SignatureInvalid:
            self._answer(SyncResult.BAD_SIGNATURE)
            return [StatementRefused(result=SyncResult.BAD_SIGNATURE)]
        self.state = SyncState.AWAIT_VERDICT
        return [RotationOffered(new_cert=cert_new)]

    def _on_answer(self, frame: SyncFrame) -> list[SyncEvent]:
        code = frame.body[0]
        if code not in SyncResult._value2member_map_:
            raise ProtocolError("unknown answer")
        self.state = SyncState.DONE
        return [Answered(result=SyncResult(code), told=self.rotation is not None),
                SyncDone()]

    # The handlers themselves, not their names: a renamed handler fails mypy.
    _table: ClassVar[Mapping[tuple[SyncState, SyncFrameType],
                             Callable[[SyncSession, SyncFrame], list[SyncEvent]]]] = {
        (SyncState.AWAIT_HELLO, SyncFrameType.HELLO): _on_hello,
        (SyncState.AWAIT_STATEMENT, SyncFrameType.STATEMENT): _on_statement,
        (SyncState.AWAIT_ANSWER, SyncFrameType.ANSWER): _on_answer,
    }
