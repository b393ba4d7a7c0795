"""A relay that forwards whole TLS records and can drop one, closing the connection:
the lost last message of issue 11, made exact."""

from __future__ import annotations

import asyncio

__all__ = ["CuttingRelay"]

_TLS_HEADER = 5


class CuttingRelay:
    """Forward whole TLS records between a joiner and 127.0.0.1:``port``; instead of
    forwarding record number ``cut`` (0-based) going ``direction`` (``up``: joiner to
    offerer, ``down``), close both connections. ``cut=None`` forwards everything."""

    def __init__(self, port: int, direction: str, cut: int | None) -> None:
        self.target, self.direction, self.cut = port, direction, cut
        self.port = 0
        self.cut_done = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> CuttingRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, "up"),
                             self._pipe(up_reader, writer, "down"), return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    direction: str) -> None:
        count = 0
        try:
            while True:
                header = await src.readexactly(_TLS_HEADER)
                body = await src.readexactly(int.from_bytes(header[3:5], "big"))
                if direction == self.direction and count == self.cut:
                    self.cut_done = True
                    for writer in self._writers:
                        writer.close()
                    return
                count += 1
                dst.write(header + body)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            dst.close()
