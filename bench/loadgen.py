"""Load generator, run as its own process: ``python -m bench.loadgen PORT SECONDS``.

Opens half of ``--connections`` idle connections to 127.0.0.1:PORT; each connection of
the other half sends 512 random bytes, and its worker reconnects ``--interval`` seconds
after the offerer dropped it (0: at once, a flood). Prints ``ready`` once the idle half is
connected, and stops by itself after SECONDS or when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys


async def _main(port: int, seconds: float, connections: int,
                interval: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    counts = {"idle": 0, "garbage": 0, "errors": 0}
    writers: list[asyncio.StreamWriter] = []

    async def idle() -> None:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            counts["idle"] += 1

    first_round = asyncio.Event()
    garbage_workers = connections - connections // 2

    async def garbage() -> None:
        rounds = 0
        while not stop.is_set():
            rounds += 1
            if rounds == 2:
                counts["settled"] = counts.get("settled", 0) + 1
                if counts["settled"] == garbage_workers:
                    first_round.set()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(os.urandom(512))
                await writer.drain()
                counts["garbage"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(4096), 1.0)
                writer.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)  # pacing, stop promptly
            except OSError:
                counts["errors"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.01)  # back off, stop promptly

    await asyncio.gather(*(idle() for _ in range(connections // 2)))
    workers = [asyncio.ensure_future(garbage()) for _ in range(garbage_workers)]
    # Ready once every garbage worker has been dropped and come back: the offerer has
    # absorbed the opening burst and the load is in its steady state.
    await asyncio.wait_for(first_round.wait(), seconds)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), seconds)  # EOF on stdin ends the load
    stop.set()
    await asyncio.gather(*workers, return_exceptions=True)
    for writer in writers:
        writer.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between a garbage worker's connections (0: flood)")
    args = parser.parse_args()
    from bench.load import raise_fd_limit

    raise_fd_limit()
    counts = asyncio.run(_main(args.port, min(args.seconds, 60.0), args.connections,
                               args.interval))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
