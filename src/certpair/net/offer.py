"""The offerer's driver: listen, show secrets, run one pairing conversation per connection.

Thin: it reads and writes sockets, runs TLS, hands bytes to the sans-I/O sessions in
``certpair.protocol``, and commits trust only on a ``Paired`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable

from certpair.addresses import format_address
from certpair.codes import (
    CPACE_DEFAULT_DIGITS,
    HMAC_DEFAULT_BITS,
    Mode,
    Secret,
    generate_code,
    generate_hmac_key,
    generate_nameplate,
    with_nameplate,
)
from certpair.errors import (
    BadInput,
    CertpairError,
    Expired,
    PairingFailed,
)
from certpair.identity import Identity
from certpair.net.admission import check_new_peer
from certpair.net.commit import commit_on_paired
from certpair.net.conversation import READ_SIZE, Conversation, remote_of
from certpair.net.offer_events import (
    JoinerRefused,
    Listening,
    OfferEvent,
    PeerPaired,
    ProofRejected,
    RelayStatus,
)
from certpair.net.offer_outcome import Run, conclude_stored
from certpair.net.offer_relay import OfferRelay
from certpair.ports import PAIRING_PORT, cannot_listen
from certpair.profile import CertificateRefused
from certpair.protocol.events import (
    Failed,
    FailureReason,
    Paired,
    Role,
)
from certpair.protocol.offer import Offer, OfferState
from certpair.protocol.session import Event, OffererSession
from certpair.relay import RelayAddress
from certpair.store import Peer, StoreUnusable, TrustStore
from certpair.tls import PairingTLS, TLSFailure, starts_like_tls

__all__ = [
    "CONVERSATION_TIMEOUT",
    "MAX_CODES",
    "JoinerRefused",
    "Listening",
    "OfferEvent",
    "PeerPaired",
    "ProofRejected",
    "RelayStatus",
    "run_offer",
]

# Each burned cpace code gave an attacker one guess; a run issues at most this many,
# so one `certpair pair` concedes at most MAX_CODES online guesses.
MAX_CODES = 10
CONVERSATION_TIMEOUT = 10.0


def _spent(reason: FailureReason, text: str, offer_: Offer) -> str:
    """The log's words for a failed proof that spent an attempt: why, and what it cost."""
    what = "code" if offer_.mode is Mode.CPACE else "key"
    if reason is FailureReason.PAIRING_FAILED:
        text = f"wrong {what} (or a tampered connection)"
    if offer_.state is OfferState.BURNED:
        return f"{text}; the {what} is burned"
    return f"{text}; {offer_.max_failures - offer_.failures} tries left"


class _Offerer:
    def __init__(
        self, *, identity: Identity, store: TrustStore, mode: Mode, ttl: float,
        digits: int, bits: int, once: bool, on_event: Callable[[OfferEvent], None],
        clock: Callable[[], float], wall_clock: Callable[[], float], secret: Secret | None,
        relay: RelayAddress | None,
    ) -> None:
        self.identity = identity
        self.store = store
        self.mode = mode
        self.ttl = ttl
        self.digits = digits
        self.bits = bits
        self.once = once
        self.on_event = on_event
        self.clock = clock
        self.wall_clock = wall_clock
        self.fixed_secret = secret
        self.codes_issued = 0
        self.last_rejected = ""  # the remote address of the last failed proof
        self.current: Offer | None = None
        self.changed = asyncio.Event()
        self.result: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()
        self.handlers: set[asyncio.Task[object]] = set()
        self.relay = None if relay is None else OfferRelay(relay, self.handle, on_event)

    def new_offer(self) -> Offer:
        if self.fixed_secret is not None and self.codes_issued == 0:
            secret = self.fixed_secret
        elif self.mode is Mode.CPACE:
            secret = generate_code(self.digits)
        else:
            secret = generate_hmac_key(self.bits)
        if self.relay is not None:
            # Public and drawn apart from the secret: the relay's meeting point.
            secret = with_nameplate(secret, secret.nameplate or generate_nameplate())
            self.relay.follow(secret.nameplate or "")
        self.codes_issued += 1
        self.current = Offer(secret=secret, expires_at=self.clock() + self.ttl,
                             max_failures=1 if self.once else None)
        return self.current

    def _track(self, task: asyncio.Task[object] | None) -> None:
        """A running conversation's task, cancelled when the offer ends."""
        if task is not None:
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     relayed: str | None = None,
                     on_proven: Callable[[], None] = lambda: None) -> None:
        self._track(asyncio.current_task())
        remote = relayed or remote_of(writer)
        conv: Conversation | None = None
        session: OffererSession | None = None
        run = Run(remote=remote, relay=None if self.relay is None or relayed is None
                   else str(self.relay.relay))
        try:
            async with asyncio.timeout(CONVERSATION_TIMEOUT):
                first = await reader.read(READ_SIZE)
                if not first or not starts_like_tls(first):
                    return
                conv = Conversation(reader, writer, PairingTLS(self.identity, server_side=True))
                conv.tls.receive_bytes(first)
                await conv.handshake()
                on_proven()  # a relay's waiting place may go back at once (relay/waiting.py)
                assert self.current is not None
                session = OffererSession(
                    offer=self.current, channel=conv.tls.channel(), name=self.identity.name,
                    scalar=secrets.token_bytes(32),
                )
                try:
                    check_new_peer(self.store, self.identity, session.channel.cert_joiner)
                except CertificateRefused as exc:
                    # Before any proof is read: the offer is not claimed, no code spent.
                    self.refuse(session, exc, remote)
                    await conv.send(session.data_to_send())
                    return
                except StoreUnusable as exc:
                    # This offer can pair nobody: say so, and end it (exit 5).
                    session.refuse_at_start(FailureReason.STORE_FAILED)
                    with contextlib.suppress(TLSFailure, OSError):
                        await conv.send(session.data_to_send())
                    raise StoreUnusable(f"{exc}; the joiner was told and keeps nothing") from exc
                while not session.finished:
                    data = await conv.receive_app()
                    events = self.commit(session, session.receive_data(data, now=self.clock()),
                                         run)
                    # Recorded before the answer is sent: a connection reset during the
                    # send must not lose the outcome (issue 10 §2).
                    for event in events:
                        self.conclude(session, event, run)
                    await conv.send(session.data_to_send())
        except CertpairError as exc:
            # The store cannot be read or written: this offer can pair nobody; end it.
            if not self.result.done():
                self.result.set_exception(exc)
        except (TLSFailure, OSError, TimeoutError, asyncio.CancelledError) as exc:
            # Not a pairing attempt unless a session exists; a session cut short still
            # spends its attempt if it held the offer, and one cut short after the
            # commit leaves the joiner unconfirmed.
            if session is not None:
                lost = session.connection_lost()
                if lost is not None:
                    self.conclude(session, lost, run)
            if isinstance(exc, asyncio.CancelledError):
                # Shutting down. Ending normally rather than re-raising keeps Python
                # 3.11's StreamReaderProtocol from logging each cancelled handler.
                return
        finally:
            if conv is None:
                writer.close()
            else:
                conv.close()
            # Whatever this conversation did to the offer (claimed, released, burned,
            # paired), the offer loop looks again now rather than at the next timeout.
            self.changed.set()

    def refuse(self, session: OffererSession, exc: CertificateRefused, remote: str) -> None:
        session.refuse_certificate()
        # Spends nothing, so anyone can repeat it: counted per source and minute.
        self.store.record_refusal(
            kind="pairing", role=Role.OFFERER.value, remote=remote,
            mode=session.offer.mode.value, outcome="failed", reason=str(exc),
        )
        self.on_event(JoinerRefused(remote=remote, reason=str(exc)))

    def commit(self, session: OffererSession, events: list[Event], run: Run) -> list[Event]:
        """Store the joiner on Paired, before the session may say so to the joiner."""

        def store_joiner(paired: Paired) -> Peer:
            # Whether it was trusted before comes from the commit's own transaction: a
            # peer another process stores meanwhile is never taken for this run's.
            done = self.store.commit_pairing_result(
                name=paired.peer_name, cert_der=paired.peer_cert_der, mode=paired.mode.value,
                role=Role.OFFERER.value, remote=run.remote, confirmed=False)
            run.existed = not done.created
            return done.peer

        done = commit_on_paired(session, events, store_joiner)
        run.peer = run.peer or done.peer
        if isinstance(done.error, StoreUnusable):
            # The joiner hears ERROR(STORE_FAILED) and stores nothing.
            run.error = StoreUnusable(f"{done.error}; the joiner was told and keeps nothing")
        elif done.error is not None:
            run.error = done.error  # another run stored a device with its names meanwhile
        return done.events

    def conclude(self, session: OffererSession, event: Event, run: Run) -> None:
        mode = session.offer.mode.value
        if run.error is not None or run.peer is not None:
            conclude_stored(event, run, store=self.store, result=self.result,
                            on_event=self.on_event)
            return
        assert isinstance(event, Failed)
        reason = event.reason.text
        if event.reason is FailureReason.CERTIFICATE_REFUSED and event.remote:
            reason = "the joiner refused this device's certificate"
        if session.attempt_spent:  # at most max_failures of these per code
            self.store.record_event(kind="pairing", role=Role.OFFERER.value,
                                    remote=run.remote, mode=mode, outcome="failed",
                                    reason=_spent(event.reason, reason, session.offer))
        else:  # spent nothing, so anyone can repeat it: counted per source and minute
            self.store.record_refusal(kind="pairing", role=Role.OFFERER.value,
                                      remote=run.remote, mode=mode, outcome="failed",
                                      reason=reason)
        if session.attempt_spent:
            offer_ = session.offer
            self.last_rejected = run.remote
            self.on_event(ProofRejected(
                reason=event.reason, remote=run.remote, burned=offer_.state is OfferState.BURNED,
                attempts_left=offer_.max_failures - offer_.failures,
            ))
        self.changed.set()

    def listening(self, host: str, port: int, offer_: Offer) -> Listening:
        return Listening(host=host, port=port, mode=self.mode, code=offer_.secret.display,
                         expires_at=self.wall_time(offer_.expires_at),
                         relay=None if self.relay is None else str(self.relay.relay),
                         nameplate=offer_.secret.nameplate)

    def wall_time(self, at: float) -> float:
        """The wall-clock time (for people and JSON) of ``at`` on the expiry clock."""
        return self.wall_clock() + (at - self.clock())

    async def serve(self, host: str, port: int, timeout: float | None) -> Peer:
        try:
            # A deep backlog: a flood of connections must not drop the real joiner's SYN.
            server = await asyncio.start_server(self.handle, host, port, backlog=1024)
        except OSError as exc:
            raise cannot_listen(format_address(host, port), exc) from exc
        try:
            bound_port = int(server.sockets[0].getsockname()[1])
            deadline = None if timeout is None else self.clock() + timeout
            offer_ = self.new_offer()
            self.on_event(self.listening(host, bound_port, offer_))
            while not self.result.done():
                if offer_.state is OfferState.BURNED:
                    if self.once or self.mode is Mode.HMAC or self.codes_issued >= MAX_CODES:
                        raise PairingFailed("pairing failed: wrong secret or tampered "
                                            f"connection from {self.last_rejected}")
                    offer_ = self.new_offer()
                    if deadline is not None:
                        offer_.expires_at = min(offer_.expires_at, deadline)
                    self.on_event(self.listening(host, bound_port, offer_))
                    continue
                end = offer_.expires_at if deadline is None else min(offer_.expires_at, deadline)
                remaining = end - self.clock()
                if remaining <= 0 and offer_.state is OfferState.OPEN:
                    raise Expired("the pairing secret expired unused")
                waiters: set[asyncio.Future[object]] = {
                    asyncio.ensure_future(self.changed.wait()),
                    asyncio.ensure_future(asyncio.shield(self.result)),
                }
                # Past the expiry with the offer claimed, the claiming conversation's end
                # wakes the loop (every conversation sets `changed`): no polling.
                done, pending = await asyncio.wait(
                    waiters, timeout=remaining if remaining > 0 else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in pending:
                    task.cancel()
                for task in done:
                    # Retrieved here (the result itself is read below), so asyncio never
                    # reports "Future exception was never retrieved".
                    if not task.cancelled():
                        task.exception()
                self.changed.clear()
            return self.result.result()
        finally:
            server.close()
            if self.relay is not None:
                await self.relay.close()
            # End every open conversation here, so that none is still running (and
            # cancelled by asyncio.run) after the offer is over.
            for handler in list(self.handlers):
                handler.cancel()
            if self.handlers:
                await asyncio.wait(self.handlers, timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)


async def run_offer(
    *, identity: Identity, store: TrustStore, mode: Mode = Mode.CPACE, host: str = "0.0.0.0",  # noqa: S104  # the joiner is another device
    port: int = PAIRING_PORT, ttl: float = 300.0, timeout: float | None = None,
    once: bool = False, digits: int = CPACE_DEFAULT_DIGITS, bits: int = HMAC_DEFAULT_BITS,
    on_event: Callable[[OfferEvent], None] = lambda event: None,
    clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
    secret: Secret | None = None, relay: RelayAddress | None = None,
) -> Peer:
    """Offer pairing: listen, show a secret, and trust the first joiner that proves it.

    A failed cpace proof burns the code; unless ``once``, a fresh code is issued (at
    most ``MAX_CODES`` per run) and announced with a new :class:`Listening` event.

    Args:
        identity: this device.
        store: where the joiner is committed on success.
        mode: cpace (default) or hmac.
        host: address to listen on.
        port: TCP port; 0 picks a free one (reported in :class:`Listening`).
        ttl: lifetime of each secret in seconds.
        timeout: overall limit in seconds, or None.
        once: stop at the first failed proof instead of continuing.
        digits: cpace code length.
        bits: hmac key strength.
        on_event: called with each :class:`OfferEvent`; runs on the event loop.
        clock: the time source of every expiry decision; monotonic, so that a wall-clock
            step (NTP, a user's `date`) neither revives nor kills a secret early.
        wall_clock: the time source of :attr:`Listening.expires_at` (wall-clock time,
            computed as wall-now + the time remaining on ``clock``).
        secret: use this secret first instead of generating one.
        relay: also wait for the joiner at this transit relay, under a fresh public
            nameplate put in front of each code (:attr:`Listening.nameplate`).

    Returns:
        The stored peer.

    Raises:
        PairingFailed: the secret was burned and no fresh one may be issued.
        Expired: the secret expired unused, or the overall timeout passed.
        NetworkError: cannot listen.
        BadInput: unusable digits, bits or mode of ``secret``.
    """
    if secret is not None and secret.mode is not mode:
        raise BadInput("the given secret does not match the mode")
    offerer = _Offerer(
        identity=identity, store=store, mode=mode, ttl=ttl, digits=digits, bits=bits,
        once=once, on_event=on_event, clock=clock, wall_clock=wall_clock,
        secret=secret, relay=relay,
    )
    return await offerer.serve(host, port, timeout)
