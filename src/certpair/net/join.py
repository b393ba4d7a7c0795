"""The joiner's driver: connect, run the pairing conversation, commit on ``Paired``."""

from __future__ import annotations

import asyncio
import secrets

from certpair.codes import Mode, Secret
from certpair.errors import Expired, NetworkError, PairingFailed
from certpair.identity import Identity, fingerprint
from certpair.net.conversation import Conversation
from certpair.ports import PAIRING_PORT
from certpair.protocol.events import Failed, FailureReason, Paired, Role
from certpair.protocol.session import JoinerSession
from certpair.store import Peer, TrustStore
from certpair.tls import PairingTLS, TLSFailure

__all__ = ["run_join"]


_FAILURES: dict[FailureReason, tuple[type[Exception], str]] = {
    FailureReason.PAIRING_FAILED: (
        PairingFailed, "pairing failed: wrong secret or tampered connection"),
    FailureReason.PROTOCOL_ERROR: (PairingFailed, "pairing failed: the peer broke the protocol"),
    FailureReason.MODE_MISMATCH: (
        PairingFailed, "pairing failed: the offerer runs the other pairing mode"),
    FailureReason.EXPIRED: (Expired, "the pairing secret has expired"),
    FailureReason.BUSY: (NetworkError, "the offerer is busy with another joiner; try again"),
    FailureReason.CONNECTION_LOST: (NetworkError, "the connection was lost during pairing"),
}


async def run_join(
    *, identity: Identity, store: TrustStore, host: str, port: int = PAIRING_PORT,
    secret: Secret, timeout: float = 30.0, expected_fingerprint: str | None = None,
) -> Peer:
    """Join an offerer: connect, prove the secret, and trust the offerer on success.

    The mode comes from the secret's format alone, never from the network.

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
        PairingFailed: the proof failed, the peer misbehaved, or its certificate is
            not the expected one.
        Expired: the offerer's secret expired, or the run timed out.
        NetworkError: the offerer could not be reached or the connection broke.
    """
    remote = f"{host}:{port}"
    tls = PairingTLS(identity, server_side=False)
    session: JoinerSession | None = None
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
                event: Paired | Failed | None = None
                while event is None:
                    events = session.receive_data(await conv.receive_app())
                    event = events[0] if events else None
                await conv.send(session.data_to_send())
            except (TLSFailure, OSError) as exc:
                lost = session.connection_lost() if session is not None else None
                event = lost
                if event is None:
                    raise NetworkError(f"the pairing connection to {remote} failed") from exc
            finally:
                conv.close()
    except TimeoutError:
        store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                           mode=secret.mode.value, outcome="failed", reason="timed out")
        raise Expired(f"pairing with {remote} timed out") from None
    if isinstance(event, Paired):
        return store.commit_pairing(
            name=event.peer_name, cert_der=event.peer_cert_der, mode=event.mode.value,
            role=Role.JOINER.value, remote=remote,
        )
    store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                       mode=secret.mode.value, outcome="failed", reason=event.reason.text)
    error, message = _FAILURES[event.reason]
    raise error(message)
