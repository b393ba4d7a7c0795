"""One pairing connection: TCP bytes in and out of a TLS engine (shared by both drivers)."""

from __future__ import annotations

import asyncio
import contextlib

from certpair.addresses import format_address
from certpair.tls import PairingTLS

__all__ = ["READ_SIZE", "Conversation", "remote_of"]

READ_SIZE = 16384


class Conversation:
    """One TCP connection carrying one pairing TLS session."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: PairingTLS
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.tls = tls

    async def flush(self) -> None:
        data = self.tls.bytes_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def receive(self) -> None:
        data = await self.reader.read(READ_SIZE)
        if not data:
            raise ConnectionResetError("peer closed the connection")
        self.tls.receive_bytes(data)

    async def receive_app(self) -> bytes:
        """Decrypted bytes; TLS may already hold some that arrived with the handshake."""
        while True:
            data = self.tls.read()
            if data:
                return data
            await self.receive()

    async def handshake(self) -> None:
        while not self.tls.do_handshake():
            await self.flush()
            await self.receive()
        await self.flush()

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self.flush()

    def close(self) -> None:
        """Queue close_notify and close; the transport flushes what is queued first."""
        with contextlib.suppress(Exception):
            if self.tls.handshake_done:
                self.tls.close()
            # Also what a failed handshake left queued: its alert tells the peer why.
            data = self.tls.bytes_to_send()
            if data:
                self.writer.write(data)
        # Not awaiting wait_closed(): nothing depends on it, and a handler being
        # cancelled at shutdown must not be caught waiting there.
        self.writer.close()


def remote_of(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(str(peer[0]), int(peer[1]))
    return "unknown"
