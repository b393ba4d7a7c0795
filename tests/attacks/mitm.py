"""An attacker's toolkit at the TLS level: a man in the middle and hostile endpoints.

Mallory plays by the rules of TLS but not of certpair. She holds real keys for her own
certificates, terminates the joiner's TLS connection as a server and opens her own to
the offerer as a client, and sees every pairing frame in clear on both legs. What she
does with each frame is a :class:`Policy`: relay, drop, delay, reorder, replay,
tamper or substitute, per direction.

Everything listens and connects on 127.0.0.1 only, and every wait is bounded.

Pieces:

* :class:`Leg` — one TLS connection mallory terminates, read and written frame by
  frame (frames are split by their length field only: mallory is not bound by the
  format and may send anything).
* :func:`hostile_server` — a TLS server with mallory's certificate that hands each
  accepted connection to a coroutine: a fake offerer.
* :func:`connect_leg` — a TLS client connection to a real offerer: a fake joiner.
* :func:`man_in_the_middle` — both at once, with a :class:`Policy` between them
  (the policies and the raw-frame helpers live in :mod:`tests.attacks.policies` and
  are re-exported here).
* :class:`ForgedTLS` — a TLS engine configured with a certificate whose private key
  mallory does not have (to show that this cannot complete a handshake).
* :func:`tests.attacks.honest.record_honest_join` — an honest joiner that also keeps
  its transcript, for replays of a session whose plaintext leaked (stronger than any
  real capability).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

from certpair.identity import Identity, PrivateKey
from certpair.net.conversation import Conversation
from certpair.protocol.events import Channel
from certpair.tls import PairingTLS, TLSFailure
from tests.attacks.policies import (
    Callbacks,
    Delay,
    Direction,
    Drop,
    FrameSplitter,
    Policy,
    Reorder,
    Replay,
    Substitute,
    Tamper,
    frame_body,
    frame_type,
    raw_frame,
)

__all__ = [
    "LOOPBACK",
    "WAIT",
    "Callbacks",
    "Delay",
    "Direction",
    "Drop",
    "ForgedTLS",
    "FrameSplitter",
    "HostileServer",
    "Interception",
    "Leg",
    "ManInTheMiddle",
    "Policy",
    "Reorder",
    "Replay",
    "Substitute",
    "Tamper",
    "client_tls",
    "connect_leg",
    "frame_body",
    "frame_type",
    "hostile_server",
    "man_in_the_middle",
    "raw_frame",
    "server_tls",
]

LOOPBACK = "127.0.0.1"
# Upper bound on any single wait in the toolkit; the offerer's own limit is 10 s.
WAIT = 10.0

TLSFactory = Callable[[], PairingTLS]


def server_tls(identity: Identity) -> TLSFactory:
    """A factory of server-side pairing TLS engines presenting ``identity``."""
    return lambda: PairingTLS(identity, server_side=True)


def client_tls(identity: Identity) -> TLSFactory:
    """A factory of client-side pairing TLS engines presenting ``identity``."""
    return lambda: PairingTLS(identity, server_side=False)


class ForgedTLS(PairingTLS):
    """A pairing TLS engine that presents ``cert_der`` while holding some other ``key``.

    This is the certificate substitution mallory would need to keep one leg honest.
    ``PairingTLS`` refuses the mismatch outright (``check_privatekey``); here the
    context is built by hand, key first and certificate second, which OpenSSL accepts
    by silently dropping the key that does not match. Either way no handshake can
    prove possession of the certificate's key: a forged client ends up sending no
    certificate, a forged server has no usable certificate.
    """

    def __init__(  # PairingTLS.__init__ would refuse the mismatched key
        self, *, cert_der: bytes, key: PrivateKey, name: str, server_side: bool
    ) -> None:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
        ctx.use_privatekey(key)
        ctx.use_certificate(x509.load_der_x509_certificate(cert_der))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        if server_side:
            ctx.set_session_id(b"certpair-pairing")
        self._identity = Identity(
            name=name, key=key, cert_der=cert_der, cert_path=Path(), key_path=Path()
        )
        self._server_side = server_side
        self._conn = SSL.Connection(ctx, None)
        if server_side:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self.handshake_done = False


def _accept_any(conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int) -> bool:
    del conn, cert, errnum, depth, ok
    return True


class Leg:
    """One TLS connection mallory terminates, read and written frame by frame."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self._splitter = FrameSplitter()
        self._pending: list[bytes] = []
        self.received: list[bytes] = []
        self.sent: list[bytes] = []
        self.eof = False
        self.error: BaseException | None = None

    @property
    def channel(self) -> Channel:
        """Certificates and exporter of this TLS session, as mallory's side sees them."""
        return self.conv.tls.channel()

    async def read_frame(self, timeout: float = WAIT) -> bytes | None:
        """Return the next whole frame, or None once the peer closed or broke TLS.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._pending:
                if self.eof:
                    return None
                try:
                    data = await self.conv.receive_app()
                except (TLSFailure, OSError) as exc:
                    self.eof, self.error = True, exc
                    return None
                self._pending.extend(self._splitter.feed(data))
        frame = self._pending.pop(0)
        self.received.append(frame)
        return frame

    async def read_until_closed(self, timeout: float = WAIT) -> list[bytes]:
        """Read frames until the peer closes; return them."""
        frames: list[bytes] = []
        async with asyncio.timeout(timeout):
            while (frame := await self.read_frame(timeout)) is not None:
                frames.append(frame)
        return frames

    async def send_frame(self, frame: bytes) -> None:
        """Encrypt and send one frame (or any bytes)."""
        self.sent.append(frame)
        await self.conv.send(frame)

    async def close(self) -> None:
        """Send close_notify and close the socket."""
        self.conv.close()


async def connect_leg(tls: TLSFactory, port: int, *, host: str = LOOPBACK) -> Leg:
    """Open a TLS client connection (mallory as a joiner) and finish its handshake.

    Raises:
        TLSFailure, OSError: the handshake or the connection failed.
        TimeoutError: the handshake took longer than ``WAIT``.
    """
    reader, writer = await asyncio.open_connection(host, port)
    conv = Conversation(reader, writer, tls())
    try:
        async with asyncio.timeout(WAIT):
            await conv.handshake()
    except BaseException:
        conv.close()
        raise
    return Leg(conv)


Handler = Callable[[Leg], Awaitable[None]]


@dataclass
class HostileServer:
    """A listening fake offerer and what happened on its connections."""

    port: int
    legs: list[Leg] = field(default_factory=list)
    handshake_failures: list[BaseException] = field(default_factory=list)
    handler_errors: list[BaseException] = field(default_factory=list)
    finished: asyncio.Queue[Leg | None] = field(default_factory=asyncio.Queue)

    async def next_finished(self) -> Leg | None:
        """Wait for the next connection to end; None if its handshake failed."""
        return await asyncio.wait_for(self.finished.get(), WAIT)

    @property
    def accepted(self) -> int:
        """Connections accepted so far (handshake completed or not)."""
        return len(self.legs) + len(self.handshake_failures)


@contextlib.asynccontextmanager
async def hostile_server(tls: TLSFactory, handler: Handler) -> AsyncIterator[HostileServer]:
    """Listen on loopback; run ``handler`` on each connection once TLS is up.

    Connection and TLS errors raised by the handler are the peer hanging up and are
    ignored; any other exception is a bug in the attack and re-raised on exit.
    """
    state = HostileServer(port=0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conv = Conversation(reader, writer, tls())
        leg: Leg | None = None
        try:
            try:
                async with asyncio.timeout(WAIT):
                    await conv.handshake()
            except (TLSFailure, OSError, TimeoutError) as exc:
                state.handshake_failures.append(exc)
                return
            leg = Leg(conv)
            state.legs.append(leg)
            await handler(leg)
        except (TLSFailure, OSError):
            pass
        except Exception as exc:
            state.handler_errors.append(exc)
        finally:
            conv.close()
            state.finished.put_nowait(leg)

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), WAIT)
    if state.handler_errors:
        raise state.handler_errors[0]


@dataclass
class Interception:
    """One intercepted pairing: the two legs and every frame seen, in order."""

    joiner: Leg
    offerer: Leg | None = None
    upstream_error: BaseException | None = None
    transcript: list[tuple[Direction, bytes]] = field(default_factory=list)

    def frames(self, direction: Direction) -> list[bytes]:
        """The frames that arrived from one side, before the policy touched them."""
        return [frame for d, frame in self.transcript if d is direction]

    async def inject(self, direction: Direction, frame: bytes) -> None:
        """Send a frame of mallory's own making towards one side."""
        leg = self.offerer if direction is Direction.TO_OFFERER else self.joiner
        if leg is None:
            raise RuntimeError("no leg towards the offerer")
        await leg.send_frame(frame)



@dataclass
class ManInTheMiddle:
    """A running man in the middle and the pairings it intercepted."""

    server: HostileServer
    interceptions: list[Interception] = field(default_factory=list)

    @property
    def port(self) -> int:
        """Where the joiner should be sent."""
        return self.server.port

    async def next_done(self) -> Interception | None:
        """Wait until the next intercepted connection has ended on both legs."""
        leg = await self.server.next_finished()
        return next((i for i in self.interceptions if i.joiner is leg), None)


@contextlib.asynccontextmanager
async def man_in_the_middle(
    *, offerer_port: int, to_joiner: TLSFactory, to_offerer: TLSFactory,
    policy: Policy | None = None,
) -> AsyncIterator[ManInTheMiddle]:
    """Terminate the joiner's TLS, open TLS to the real offerer, relay through ``policy``.

    Args:
        offerer_port: the real offerer's port on 127.0.0.1.
        to_joiner: mallory's server-side TLS towards the joiner.
        to_offerer: mallory's client-side TLS towards the offerer.
        policy: what to do with each frame; relays everything if None.
    """
    chosen = policy or Policy()
    interceptions: list[Interception] = []

    async def pump(src: Leg, dst: Leg, direction: Direction, icpt: Interception) -> None:
        while (frame := await src.read_frame(WAIT)) is not None:
            icpt.transcript.append((direction, frame))
            for out in await chosen.on_frame(direction, frame, icpt):
                await dst.send_frame(out)

    async def relay(joiner: Leg) -> None:
        icpt = Interception(joiner=joiner)
        interceptions.append(icpt)
        try:
            icpt.offerer = await connect_leg(to_offerer, offerer_port)
        except (TLSFailure, OSError, TimeoutError) as exc:
            icpt.upstream_error = exc
            return
        try:
            tasks = {
                asyncio.ensure_future(pump(joiner, icpt.offerer, Direction.TO_OFFERER, icpt)),
                asyncio.ensure_future(pump(icpt.offerer, joiner, Direction.TO_JOINER, icpt)),
            }
            # Whichever side hangs up first ends the interception.
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                error = task.exception()
                if error is not None and not isinstance(
                    error, TLSFailure | OSError | TimeoutError
                ):
                    raise error
        finally:
            await icpt.offerer.close()

    async with hostile_server(to_joiner, relay) as server:
        yield ManInTheMiddle(server=server, interceptions=interceptions)
