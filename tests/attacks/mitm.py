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
* :func:`man_in_the_middle` — both at once, with a :class:`Policy` between them.
* :class:`ForgedTLS` — a TLS engine configured with a certificate whose private key
  mallory does not have (to show that this cannot complete a handshake).
* :func:`record_honest_join` — an honest joiner that also keeps its transcript, for
  replays of a session whose plaintext leaked (stronger than any real capability).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

from certpair.codes import Mode, Secret
from certpair.identity import Identity, PrivateKey
from certpair.net.pairing import _Conversation
from certpair.protocol.events import Channel, Failed, Paired
from certpair.protocol.frames import HEADER_SIZE, VERSION
from certpair.protocol.session import JoinerSession
from certpair.tls import PairingTLS, TLSFailure

__all__ = [
    "LOOPBACK",
    "WAIT",
    "Callbacks",
    "Delay",
    "Direction",
    "Drop",
    "ForgedTLS",
    "FrameSplitter",
    "HonestRecording",
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
    "record_honest_join",
    "server_tls",
]

LOOPBACK = "127.0.0.1"
# Upper bound on any single wait in the toolkit; the offerer's own limit is 10 s.
WAIT = 10.0

TLSFactory = Callable[[], PairingTLS]


class Direction(enum.Enum):
    """Which way a frame travels."""

    TO_OFFERER = "joiner->offerer"
    TO_JOINER = "offerer->joiner"


def frame_type(frame: bytes) -> int:
    """The type byte of a raw frame."""
    return frame[1]


def frame_body(frame: bytes) -> bytes:
    """The body of a raw frame."""
    return frame[HEADER_SIZE:]


def raw_frame(type_byte: int, body: bytes, *, version: int = VERSION) -> bytes:
    """Build a frame without any of the encoder's checks (mallory sends what she likes)."""
    return bytes([version, type_byte]) + len(body).to_bytes(2, "big") + body


class FrameSplitter:
    """Cuts a byte stream into frames using the length field alone, validating nothing."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every whole frame now available (header included)."""
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER_SIZE:
            end = HEADER_SIZE + int.from_bytes(self._buffer[2:4], "big")
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
        return frames


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

    def __init__(self, conv: _Conversation) -> None:
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
        await self.conv.close()


async def connect_leg(tls: TLSFactory, port: int, *, host: str = LOOPBACK) -> Leg:
    """Open a TLS client connection (mallory as a joiner) and finish its handshake.

    Raises:
        TLSFailure, OSError: the handshake or the connection failed.
        TimeoutError: the handshake took longer than ``WAIT``.
    """
    reader, writer = await asyncio.open_connection(host, port)
    conv = _Conversation(reader, writer, tls())
    try:
        async with asyncio.timeout(WAIT):
            await conv.handshake()
    except BaseException:
        await conv.close()
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
        conv = _Conversation(reader, writer, tls())
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
            await conv.close()
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


class Policy:
    """What mallory does with each frame. The base class relays everything unchanged."""

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        """Return the frames to forward in ``direction`` instead of ``frame``."""
        del direction, interception
        return (frame,)


def _matches(direction: Direction, frame: bytes, want_dir: Direction | None,
             want_type: int | None) -> bool:
    return (want_dir is None or direction is want_dir) and (
        want_type is None or frame_type(frame) == want_type
    )


FrameHook = Callable[[bytes, Interception], Awaitable[Sequence[bytes]]]


class Callbacks(Policy):
    """One coroutine per direction decides; a missing one relays."""

    def __init__(self, *, to_offerer: FrameHook | None = None,
                 to_joiner: FrameHook | None = None) -> None:
        self.hooks = {Direction.TO_OFFERER: to_offerer, Direction.TO_JOINER: to_joiner}

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        hook = self.hooks[direction]
        return (frame,) if hook is None else await hook(frame, interception)


class Drop(Policy):
    """Swallow matching frames (and keep the connection open: a stall)."""

    def __init__(self, direction: Direction | None = None, frame_type_: int | None = None):
        self.direction, self.frame_type = direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        return () if _matches(direction, frame, self.direction, self.frame_type) else (frame,)


class Delay(Policy):
    """Hold matching frames for ``seconds`` before forwarding them."""

    def __init__(self, seconds: float, direction: Direction | None = None) -> None:
        self.seconds, self.direction = seconds, direction

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, None):
            await asyncio.sleep(self.seconds)  # the attack itself, not synchronisation
        return (frame,)


class Tamper(Policy):
    """Rewrite matching frames with ``edit`` (e.g. flip a bit of a tag)."""

    def __init__(self, edit: Callable[[bytes], bytes], direction: Direction | None = None,
                 frame_type_: int | None = None) -> None:
        self.edit, self.direction, self.frame_type = edit, direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, self.frame_type):
            return (self.edit(frame),)
        return (frame,)


class Substitute(Policy):
    """Replace matching frames with fixed ones (e.g. recorded in another session)."""

    def __init__(self, replacement: Sequence[bytes], direction: Direction | None = None,
                 frame_type_: int | None = None) -> None:
        self.replacement, self.direction, self.frame_type = replacement, direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, self.frame_type):
            return tuple(self.replacement)
        return (frame,)


class Replay(Policy):
    """Forward matching frames and then play them again, ``times`` more times."""

    def __init__(self, times: int = 1, direction: Direction | None = None) -> None:
        self.times, self.direction = times, direction

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, None):
            return (frame,) * (1 + self.times)
        return (frame,)


class Reorder(Policy):
    """Hold the first ``count`` frames of one direction, then release them reversed."""

    def __init__(self, direction: Direction, count: int = 2) -> None:
        self.direction, self.count = direction, count
        self._held: list[bytes] = []

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if direction is not self.direction or self.count <= 0:
            return (frame,)
        self._held.append(frame)
        if len(self._held) < self.count:
            return ()
        released, self._held, self.count = self._held[::-1], [], 0
        return tuple(released)


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


@dataclass(frozen=True, kw_only=True)
class HonestRecording:
    """An honest joiner's run with its transcript (as if its plaintext had leaked)."""

    event: Paired | Failed
    transcript: list[tuple[Direction, bytes]]

    def frames(self, direction: Direction) -> list[bytes]:
        """The frames one side sent."""
        return [frame for d, frame in self.transcript if d is direction]


async def record_honest_join(identity: Identity, port: int, secret: Secret) -> HonestRecording:
    """Run the honest joiner's state machine over a real TLS connection, keeping frames.

    Nothing here is adversarial: it is ``run_join`` without the store, so a test can
    replay a genuine session's messages elsewhere.
    """
    leg = await connect_leg(client_tls(identity), port)
    transcript: list[tuple[Direction, bytes]] = []
    session = JoinerSession(
        secret=secret, channel=leg.channel, name=identity.name,
        scalar=secrets.token_bytes(32) if secret.mode is Mode.CPACE else None,
    )
    splitter = FrameSplitter()

    async def flush() -> None:
        for frame in splitter.feed(session.data_to_send()):
            transcript.append((Direction.TO_OFFERER, frame))
            await leg.send_frame(frame)

    try:
        session.start()
        await flush()
        event: Paired | Failed | None = None
        while event is None:
            frame = await leg.read_frame()
            if frame is None:
                event = session.connection_lost()
                break
            transcript.append((Direction.TO_JOINER, frame))
            events = session.receive_data(frame)
            await flush()
            event = events[0] if events else None
    finally:
        await leg.close()
    assert event is not None
    return HonestRecording(event=event, transcript=transcript)
