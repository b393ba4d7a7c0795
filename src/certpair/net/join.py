"""The joiner's driver: connect, run the pairing conversation, commit on ``Paired``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex

from certpair.codes import Mode, Secret
from certpair.errors import Expired, NetworkError, PairingFailed, PairingUnconfirmed
from certpair.identity import Identity, fingerprint
from certpair.net.conversation import Conversation
from certpair.ports import PAIRING_PORT
from certpair.protocol.events import Failed, FailureReason, Paired, Role, Unconfirmed
from certpair.protocol.session import JoinerSession
from certpair.store import Peer, StoreUnusable, TrustStore
from certpair.tls import PairingTLS, TLSFailure

__all__ = ["run_join", "unconfirmed_message"]


_FAILURES: dict[FailureReason, tuple[type[Exception], str]] = {
    FailureReason.PAIRING_FAILED: (
        PairingFailed, "pairing failed: wrong secret or tampered connection"),
    FailureReason.PROTOCOL_ERROR: (PairingFailed, "pairing failed: the peer broke the protocol"),
    FailureReason.MODE_MISMATCH: (
        PairingFailed, "pairing failed: the offerer runs the other pairing mode"),
    FailureReason.EXPIRED: (Expired, "the pairing secret has expired"),
    FailureReason.BUSY: (NetworkError, "the offerer is busy with another joiner; try again"),
    FailureReason.CONNECTION_LOST: (NetworkError, "the connection was lost during pairing"),
    FailureReason.STORE_FAILED: (
        PairingFailed, "pairing failed: the offerer could not store the pairing (its trust "
        "store failed); nothing is stored on either side: pair again once it is fixed"),
}


def unconfirmed_message(name: str, remote: str, ping_host: str) -> str:
    """The one line that says a pairing is unconfirmed and how to settle it."""
    return (f"pairing with {name} is unconfirmed: the connection to {remote} ended before "
            f"{name} said it stored this device. {name} is kept, marked unconfirmed; "
            f"settle it with `certpair ping {shlex.quote(ping_host)}` while {name} runs "
            "`certpair serve` (or the other way round), or pair again")


async def _converse(conv: Conversation, session: JoinerSession, store: TrustStore,
                    remote: str) -> Peer | Failed | Unconfirmed:
    """Run the session to its end; commit the offerer on Paired (its word came)."""
    while True:
        events = session.receive_data(await conv.receive_app())
        if not events:
            await conv.send(session.data_to_send())  # Ta, in cpace mode
            continue
        event = events[0]
        if not isinstance(event, Paired):
            assert isinstance(event, Failed | Unconfirmed)
            with contextlib.suppress(TLSFailure, OSError):
                await conv.send(session.data_to_send())
            return event
        try:
            peer = store.commit_pairing(
                name=event.peer_name, cert_der=event.peer_cert_der, mode=event.mode.value,
                role=Role.JOINER.value, remote=remote,
            )
        except StoreUnusable as exc:
            # Tell the offerer, so that it undoes its own commit.
            session.commit_failed()
            with contextlib.suppress(TLSFailure, OSError):
                await conv.send(session.data_to_send())
            raise StoreUnusable(f"{exc}; the offerer was told and keeps nothing") from exc
        session.committed()
        # Trusted on both sides now; if this last word is lost the offerer keeps this
        # device marked unconfirmed until the next trusted contact.
        with contextlib.suppress(TLSFailure, OSError):
            await conv.send(session.data_to_send())
        return peer


async def run_join(
    *, identity: Identity, store: TrustStore, host: str, port: int = PAIRING_PORT,
    secret: Secret, timeout: float = 30.0, expected_fingerprint: str | None = None,
) -> Peer:
    """Join an offerer: connect, prove the secret, and trust the offerer on success.

    The mode comes from the secret's format alone, never from the network. The
    offerer is stored only once it has said it stored this device (section 6a of
    docs/PROTOCOL.md); if the connection ends after the proof but before that word,
    the offerer is stored marked unconfirmed and :class:`PairingUnconfirmed` is raised.

    Args:
        identity: this device.
        store: where the offerer is committed on success.
        host: offerer's address.
        port: offerer's port.
        secret: the parsed secret the user typed.
        timeout: overall limit in seconds for connecting and pairing.
        expected_fingerprint: if given, the offerer's certificate must have this
            fingerprint, or the joiner stops before sending any proof.

    Returns:
        The stored peer.

    Raises:
        PairingFailed: the proof failed, the peer misbehaved, its certificate is not
            the expected one, or the offerer could not store the pairing.
        PairingUnconfirmed: the proof checked but the outcome on the offerer is unknown.
        Expired: the offerer's secret expired, or the run timed out.
        NetworkError: the offerer could not be reached or the connection broke.
        StoreUnusable: this device could not store the pairing (the offerer was told).
    """
    remote = f"{host}:{port}"
    tls = PairingTLS(identity, server_side=False)
    session: JoinerSession | None = None
    outcome: Peer | Failed | Unconfirmed | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise NetworkError(f"cannot reach {remote}: {exc.strerror or exc}") from exc
            conv = Conversation(reader, writer, tls)
            try:
                await conv.handshake()
                channel = tls.channel()
                if (expected_fingerprint is not None
                        and fingerprint(channel.cert_offerer) != expected_fingerprint):
                    store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                                       mode=secret.mode.value, outcome="failed",
                                       reason="certificate mismatch")
                    raise PairingFailed("pairing failed: the offerer's certificate does not "
                                        "match the expected fingerprint")
                session = JoinerSession(
                    secret=secret, channel=channel, name=identity.name,
                    scalar=secrets.token_bytes(32) if secret.mode is Mode.CPACE else None,
                )
                session.start()
                await conv.send(session.data_to_send())
                outcome = await _converse(conv, session, store, remote)
            except (TLSFailure, OSError) as exc:
                outcome = session.connection_lost() if session is not None else None
                if outcome is None:
                    raise NetworkError(f"the pairing connection to {remote} failed") from exc
            finally:
                conv.close()
    except TimeoutError:
        outcome = session.connection_lost() if session is not None else None
        if not isinstance(outcome, Unconfirmed):
            store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                               mode=secret.mode.value, outcome="failed", reason="timed out")
            raise Expired(f"pairing with {remote} timed out") from None
    if isinstance(outcome, Peer):
        return outcome
    assert outcome is not None
    if isinstance(outcome, Unconfirmed):
        peer = store.commit_pairing(
            name=outcome.peer_name, cert_der=outcome.peer_cert_der, mode=outcome.mode.value,
            role=Role.JOINER.value, remote=remote, confirmed=False,
        )
        raise PairingUnconfirmed(unconfirmed_message(peer.name, remote, host), peer=peer)
    store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                       mode=secret.mode.value, outcome="failed", reason=outcome.reason.text)
    error, message = _FAILURES[outcome.reason]
    raise error(message)
