"""A pairing peer that resets its TCP connection at a chosen step, synchronously.

The asyncio streams close a socket later, on the loop; to make the other side meet the
reset while it is answering (the race of issue 10 §2) the last bytes and the RST must
both be in its kernel before its event loop runs again. So this peer drives TLS over a
plain non-blocking socket and, to reset, sends its last record and closes with
``SO_LINGER`` 0 in one synchronous step.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from certpair.identity import Identity
from certpair.tls import PairingTLS, TLSFailure
from tests.attacks.mitm import LOOPBACK, WAIT
from tests.attacks.policies import FrameSplitter


class RawPeer:
    """One side of a pairing TLS connection over a raw socket."""

    def __init__(self, sock: socket.socket, tls: PairingTLS) -> None:
        self.sock = sock
        self.tls = tls
        self._splitter = FrameSplitter()
        self._pending: list[bytes] = []

    @classmethod
    async def connect(cls, identity: Identity, port: int) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
        peer = cls(sock, PairingTLS(identity, server_side=False))
        await peer.handshake()
        return peer

    async def _flush(self) -> None:
        data = self.tls.bytes_to_send()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _receive(self) -> bool:
        data = await asyncio.wait_for(
            asyncio.get_running_loop().sock_recv(self.sock, 16384), WAIT)
        if not data:
            return False
        self.tls.receive_bytes(data)
        return True

    async def handshake(self) -> None:
        while not self.tls.do_handshake():
            await self._flush()
            if not await self._receive():
                raise ConnectionResetError("closed during the handshake")
        await self._flush()

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def read_frame(self) -> bytes | None:
        """The next whole frame, or None once the other side closed."""
        while not self._pending:
            try:
                data = self.tls.read()
            except TLSFailure:
                return None
            if data:
                self._pending.extend(self._splitter.feed(data))
                continue
            try:
                if not await self._receive():
                    return None
            except (ConnectionError, TLSFailure):
                return None
        return self._pending.pop(0)

    def reset(self, last: bytes = b"") -> None:
        """Send ``last`` (encrypted) and reset the connection, without yielding."""
        if last:
            self.tls.write(last)
        data = self.tls.bytes_to_send()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if data:
            self.sock.send(data)  # a few hundred bytes: the loopback buffer takes them whole
        self.sock.close()
