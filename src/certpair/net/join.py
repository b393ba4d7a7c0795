"""The joiner's driver: connect, run the pairing conversation, commit on ``Paired``."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import shlex
from collections.abc import Callable

from certpair.addresses import format_address
from certpair.codes import Mode, Secret
from certpair.errors import (
    BadInput,
    Expired,
    NetworkError,
    PairingFailed,
    PairingUnconfirmed,
)
from certpair.identity import Identity, fingerprint
from certpair.net.admission import check_new_peer, why_peer_refused_us
from certpair.net.commit import commit_on_paired
from certpair.net.conversation import Conversation
from certpair.ports import ALPN_PAIRING, PAIRING_PORT, service_of
from certpair.profile import CertificateRefused
from certpair.protocol.events import Failed, FailureReason, Role, Unconfirmed
from certpair.protocol.session import JoinerSession
from certpair.relay import RelayAddress, pairing_token
from certpair.relay.race import RELAY_DELAY, Route, connect_first
from certpair.store import Peer, StoreUnusable, TrustStore
from certpair.tls import PairingTLS, TLSFailure

__all__ = ["JoinStage", "Route", "run_join", "unconfirmed_message"]


class JoinStage(enum.Enum):
    """Where a join is, reported to ``on_progress`` as it gets there."""

    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    PROVING = "proving"


# What a timeout in each stage most likely means, for the one line the user reads.
_TIMEOUT_CAUSES = {
    JoinStage.CONNECTING: "while connecting: no answer at that address; is `certpair pair` "
                          "running there, and does a firewall let the port through?",
    JoinStage.HANDSHAKE: "during the TLS handshake: something answers at that port, but it "
                         "is not a certpair offerer",
    JoinStage.PROVING: "while proving the code: the offerer did not answer the proof; it "
                       "may have stopped or be busy with another joiner",
}
_RELAY_TIMEOUT = ("while waiting at {relay}: the offerer never came there; is `certpair "
                  "pair --relay` running with that code (the digits before '+' name the "
                  "meeting point)?")


_FAILURES: dict[FailureReason, tuple[type[Exception], str]] = {
    FailureReason.PAIRING_FAILED: (
        PairingFailed, "pairing failed: wrong secret or tampered connection (if the code "
        "was replaced, the offerer may be showing a new code)"),
    FailureReason.PROTOCOL_ERROR: (PairingFailed, "pairing failed: the peer broke the protocol"),
    FailureReason.MODE_MISMATCH: (
        PairingFailed, "pairing failed: the offerer runs the other pairing mode"),
    FailureReason.EXPIRED: (Expired, "the pairing secret has expired"),
    FailureReason.BUSY: (NetworkError, "the offerer is busy with another joiner; try again"),
    FailureReason.CONNECTION_LOST: (NetworkError, "the connection was lost during pairing"),
    FailureReason.STORE_FAILED: (
        PairingFailed, "pairing failed: the offerer could not store the pairing (its trust "
        "store failed); nothing is stored on either side: pair again once it is fixed"),
    FailureReason.CERTIFICATE_REFUSED: (
        PairingFailed, "pairing failed: the offerer refused this device's certificate"),
}


def unconfirmed_message(name: str, remote: str, ping_host: str,
                        relay: str | None = None) -> str:
    """The one line that says a pairing is unconfirmed and how to settle it."""
    ping = f"--relay {relay} {shlex.quote(name)}" if relay else shlex.quote(ping_host)
    serve = f"`certpair serve --relay {relay}`" if relay else "`certpair serve`"
    return (f"pairing with {name} is unconfirmed: the connection to {remote} ended before "
            f"{name} said it stored this device. {name} is kept, marked unconfirmed; "
            f"settle it with `certpair ping {ping}` while {name} runs "
            f"{serve} (or the other way round), or pair again")


async def _converse(conv: Conversation, session: JoinerSession, store: TrustStore,
                    remote: str) -> Peer | Failed | Unconfirmed:
    """Run the session to its end; commit the offerer on Paired (its word came)."""
    while True:
        events = session.receive_data(await conv.receive_app())
        if not events:
            await conv.send(session.data_to_send())  # Ta, in cpace mode
            continue
        done = commit_on_paired(session, events, lambda paired: store.commit_pairing(
            name=paired.peer_name, cert_der=paired.peer_cert_der, mode=paired.mode.value,
            role=Role.JOINER.value, remote=remote))
        # The session's answer (COMMITTED, or ERROR(7) so that the offerer undoes its own
        # commit) goes out whatever happens next; if it is lost, the offerer keeps this
        # device unconfirmed until the next trusted contact.
        with contextlib.suppress(TLSFailure, OSError):
            await conv.send(session.data_to_send())
        if isinstance(done.error, CertificateRefused):
            raise done.error  # a device with the offerer's names was stored meanwhile
        if done.error is not None:
            raise StoreUnusable(f"{done.error}; the offerer was told and keeps nothing"
                                ) from done.error
        if done.peer is not None:
            return done.peer
        outcome = done.events[0]
        assert isinstance(outcome, Failed | Unconfirmed)
        return outcome


class _Progress:
    """Remembers the stage a join is in, and reports each one as it is reached."""

    def __init__(self, report: Callable[[JoinStage], None]) -> None:
        self.report = report
        self.stage = JoinStage.CONNECTING
        self.route: Route | None = None  # the last route tried

    def timeout_cause(self) -> str:
        """What a timeout in the current stage most likely means."""
        if self.stage is JoinStage.CONNECTING and self.route is not None \
                and self.route.path == "relay":
            return _RELAY_TIMEOUT.format(relay=self.route.remote)
        return _TIMEOUT_CAUSES[self.stage]

    def tried(self, route: Route) -> None:
        self.route = route

    def __call__(self, stage: JoinStage) -> None:
        self.stage = stage
        self.report(stage)


def _log_failure(store: TrustStore, remote: str, secret: Secret, reason: str) -> None:
    """The audit-log row of a join that failed: the one shape of all of them."""
    store.record_event(kind="pairing", role=Role.JOINER.value, remote=remote,
                       mode=secret.mode.value, outcome="failed", reason=reason)


def _check_pairing_port(tls: PairingTLS, remote: str) -> None:
    """Stop at once, before any proof, if the server is a trusted certpair port (ALPN)."""
    kind = service_of(tls.protocol(), ALPN_PAIRING)
    if kind is not None:
        raise NetworkError(
            f"{remote} is a trusted certpair port (`{kind}`), not a pairing port: give the "
            f"address and port that `certpair pair` shows (default {PAIRING_PORT})")

async def _admit(conv: Conversation, session: JoinerSession, store: TrustStore,
                 identity: Identity, remote: str, expected_fingerprint: str | None) -> None:
    """Check the offerer's certificate before anything secret-dependent is sent.

    Raises:
        PairingFailed: not the expected fingerprint (when one is pinned).
        CertificateRefused: it breaks the profile or poses as a paired device; the
            offerer is told (ERROR(CERTIFICATE_REFUSED)) and its code stays unspent.
    """
    cert = session.channel.cert_offerer
    if expected_fingerprint is not None and fingerprint(cert) != expected_fingerprint:
        _log_failure(store, remote, session.secret, "certificate mismatch")
        raise PairingFailed("pairing failed: the offerer's certificate does not "
                            "match the expected fingerprint")
    try:
        check_new_peer(store, identity, cert)
    except CertificateRefused as exc:
        # Logged first, so a failing send loses nothing.
        session.refuse_certificate()
        _log_failure(store, remote, session.secret, str(exc))
        with contextlib.suppress(TLSFailure, OSError):
            await conv.send(session.data_to_send())
        raise


def _first_remote(host: str | None, port: int, relay: RelayAddress | None,
                  secret: Secret) -> str:
    if relay is not None and secret.nameplate is None:
        raise BadInput("to meet at a relay the code needs its meeting point: the digits "
                       "before '+' that `certpair pair --relay` shows")
    if relay is None and host is None:
        raise BadInput("give the offerer's address, or a relay to meet it at")
    return format_address(host, port) if host is not None else f"relay {relay}"


async def run_join(
    *, identity: Identity, store: TrustStore, host: str | None, port: int = PAIRING_PORT,
    secret: Secret, timeout: float = 30.0, expected_fingerprint: str | None = None,
    on_progress: Callable[[JoinStage], None] = lambda stage: None,
    relay: RelayAddress | None = None, relay_delay: float = RELAY_DELAY,
    on_route: Callable[[Route], None] = lambda route: None,
) -> Peer:
    """Join an offerer: connect, prove the secret, and trust the offerer on success.

    The mode comes from the secret's format alone, never from the network. The
    offerer is stored only once it has said it stored this device (section 6a of
    docs/PROTOCOL.md); if the connection ends after the proof but before that word,
    the offerer is stored marked unconfirmed and :class:`PairingUnconfirmed` is raised.

    With a ``relay`` (and a secret carrying a nameplate) the offerer is also met at the
    relay, under the nameplate's token: the direct address first, the relay after
    ``relay_delay`` seconds or as soon as the direct attempt failed; the first that is
    up carries the pairing (the protocol is the same on both).

    Args:
        identity: this device.
        store: where the offerer is committed on success.
        host: offerer's address (None: through the relay only).
        port: offerer's port.
        secret: the parsed secret the user typed.
        timeout: overall limit in seconds for connecting and pairing.
        expected_fingerprint: if given, the offerer's certificate must have this
            fingerprint, or the joiner stops before sending any proof.
        on_progress: called with each :class:`JoinStage` as the join reaches it.
        relay: the transit relay where the offerer also waits.
        relay_delay: how long the direct attempt has alone.
        on_route: told of the route that carries the pairing, once it is up.

    Returns:
        The stored peer.

    Raises:
        PairingFailed: the proof failed, the peer misbehaved, its certificate is not
            the expected one, or the offerer could not store the pairing.
        PairingUnconfirmed: the proof checked but the outcome on the offerer is unknown.
        CertificateRefused: the offerer's certificate breaks certpair's profile or
            poses as an already-paired device (nothing was sent that depends on the
            secret).
        Expired: the offerer's secret expired, or the run timed out.
        NetworkError: the offerer could not be reached or the connection broke, or
            the port is a trusted certpair port (serve, tunnel), not a pairing one.
        StoreUnusable: this device could not store the pairing (the offerer was told).
    """
    remote = _first_remote(host, port, relay, secret)
    reach = _Progress(on_progress)
    tls = PairingTLS(identity, server_side=False)
    session: JoinerSession | None = None
    outcome: Peer | Failed | Unconfirmed | None = None
    try:
        async with asyncio.timeout(timeout):
            reach(JoinStage.CONNECTING)
            (reader, writer), route = await connect_first(
                direct=None if host is None else (host, port), relay=relay,
                token=None if secret.nameplate is None else pairing_token(secret.nameplate),
                relay_delay=relay_delay, on_route=reach.tried)
            remote = route.remote
            on_route(route)
            conv = Conversation(reader, writer, tls)
            try:
                reach(JoinStage.HANDSHAKE)
                await conv.handshake()
                _check_pairing_port(tls, remote)
                session = JoinerSession(
                    secret=secret, channel=tls.channel(), name=identity.name,
                    scalar=secrets.token_bytes(32) if secret.mode is Mode.CPACE else None,
                )
                await _admit(conv, session, store, identity, remote, expected_fingerprint)
                reach(JoinStage.PROVING)
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
            _log_failure(store, remote, secret, "timed out")
            cause = reach.timeout_cause()
            raise Expired(f"pairing with {remote} timed out {cause}") from None
    if isinstance(outcome, Peer):
        return outcome
    assert outcome is not None
    if isinstance(outcome, Unconfirmed):
        peer = store.commit_pairing(
            name=outcome.peer_name, cert_der=outcome.peer_cert_der, mode=outcome.mode.value,
            role=Role.JOINER.value, remote=remote, confirmed=False,
        )
        relayed = remote.removeprefix("relay ") if remote.startswith("relay ") else None
        raise PairingUnconfirmed(unconfirmed_message(peer.name, remote, host or "", relayed),
                                 peer=peer)
    _log_failure(store, remote, secret, outcome.reason.text)
    error, message = _FAILURES[outcome.reason]
    if outcome.reason is FailureReason.CERTIFICATE_REFUSED:
        message = f"{message} ({why_peer_refused_us(identity)})"
    if outcome.reason is FailureReason.PAIRING_FAILED:
        raise PairingFailed(message, wrong_secret=True)
    raise error(message)
