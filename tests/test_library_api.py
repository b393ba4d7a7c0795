"""The library as an application developer meets it (issue 25), through the public API
only: names the type checker can see, refusals that raise, unpairing that reaches open
connections, one verdict for any client's failure, exceptions in one place, a clean
shutdown. Real TLS over loopback; real HTTP clients."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests

import certpair
from tests.trustedutil import Devices, make_devices

TIMEOUT = 10.0


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    """alpha and beta paired; gamma trusts alpha, alpha does not trust gamma."""
    return make_devices(tmp_path)


# 1. mypy sees exactly the public names -------------------------------------------------

def test_mypy_rejects_a_misspelt_or_submodule_only_name(tmp_path: Path) -> None:
    snippet = tmp_path / "app.py"
    snippet.write_text("import certpair\n"
                       "from certpair import StoreUnusable\n"
                       "ctx = certpair.cleint_context\n"
                       "from certpair.exceptions import StoreUnusable as Fine\n"
                       "ok = certpair.client_context\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert 'has no attribute "StoreUnusable"' in done.stdout, done.stdout
    assert 'no attribute "cleint_context"' in done.stdout, done.stdout
    assert "app.py:4" not in done.stdout and "app.py:5" not in done.stdout, done.stdout


# 2. an asyncio client learns of its refusal ----------------------------------------------

def _blocking_server(devices: Devices, home: str) -> Iterator[certpair.trusted.TrustedServer]:
    def handler(tls: ssl.SSLSocket, peer: certpair.Peer) -> None:
        tls.sendall(b"hello " + peer.name.encode() + b"\n")
        tls.recv(1)

    server = certpair.make_server(handler, "127.0.0.1", 0, devices.home(home))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alpha_blocking(devices: Devices) -> Iterator[certpair.trusted.TrustedServer]:
    yield from _blocking_server(devices, "alpha")


@pytest.mark.parametrize("server_kind", ["asyncio", "threads"])
def test_open_connection_to_a_server_that_refuses_this_device_raises_not_paired(
        devices: Devices, server_kind: str) -> None:
    async def scenario() -> None:
        if server_kind == "asyncio":
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              peer: certpair.Peer) -> None:
                writer.write(b"hello\n")
                await writer.drain()
            server = await certpair.start_server(handler, "127.0.0.1", 0, devices.home("alpha"))
            port = server.sockets[0].getsockname()[1]
        else:
            blocking = certpair.make_server(lambda tls, peer: tls.sendall(b"hello\n"),
                                            "127.0.0.1", 0, devices.home("alpha"))
            threading.Thread(target=blocking.serve_forever, daemon=True).start()
            port = blocking.server_address[1]
        try:
            reader, writer, peer = await certpair.open_connection(
                "127.0.0.1", port, devices.home("gamma"))
            assert peer.name == "alpha"  # gamma trusts alpha: its side of the handshake ends
            with pytest.raises(certpair.NotPaired, match="refused this device: it is not "
                                                         "paired there"):
                async with asyncio.timeout(TIMEOUT):
                    await reader.readline()
            writer.close()
        finally:
            if server_kind == "asyncio":
                server.close()
                await server.wait_closed()
            else:
                blocking.shutdown()
                blocking.server_close()

    asyncio.run(scenario())


def test_the_asyncio_server_reports_the_real_refusal_reason(devices: Devices) -> None:
    reasons: list[str] = []

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          peer: certpair.Peer) -> None:
            raise AssertionError("gamma must never reach the handler")

        server = await certpair.start_server(handler, "127.0.0.1", 0, devices.home("alpha"),
                                             on_refused=lambda remote, why: reasons.append(why))
        port = server.sockets[0].getsockname()[1]
        reader, writer, _ = await certpair.open_connection("127.0.0.1", port,
                                                           devices.home("gamma"))
        with pytest.raises(certpair.NotPaired):
            async with asyncio.timeout(TIMEOUT):
                await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert reasons == ["not a paired device"]


# 3. unpairing reaches open connections ----------------------------------------------------

def test_start_server_cuts_an_open_connection_of_a_device_that_is_unpaired(
        devices: Devices) -> None:
    seen: list[BaseException | bytes] = []

    async def scenario() -> None:
        echoed = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          peer: certpair.Peer) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            echoed.set()
            try:
                seen.append(await reader.readline())  # waits: beta sends nothing more
            except certpair.NotPaired as exc:
                seen.append(exc)

        server = await certpair.start_server(handler, "127.0.0.1", 0, devices.home("alpha"))
        port = server.sockets[0].getsockname()[1]
        reader, writer, _ = await certpair.open_connection("127.0.0.1", port,
                                                           devices.home("beta"))
        writer.write(b"keep-alive\n")
        assert await reader.readline() == b"keep-alive\n"
        await echoed.wait()
        await asyncio.to_thread(devices.forget, "alpha", "beta")  # another store handle
        async with asyncio.timeout(TIMEOUT):
            rest = await reader.read()  # the connection ends from alpha's side
        assert rest == b""
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert len(seen) == 1 and isinstance(seen[0], certpair.NotPaired), seen
    assert "beta" in str(seen[0]) and "unpaired" in str(seen[0])


def test_make_server_cuts_an_open_connection_of_a_device_that_is_unpaired(
        devices: Devices) -> None:
    ended = threading.Event()

    def handler(tls: ssl.SSLSocket, peer: certpair.Peer) -> None:
        tls.sendall(tls.recv(64))
        while tls.recv(64):  # until cut
            pass
        ended.set()

    server = certpair.make_server(handler, "127.0.0.1", 0, devices.home("alpha"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tls, _ = certpair.connect("127.0.0.1", server.server_address[1], devices.home("beta"))
        with tls:
            tls.sendall(b"hi")
            assert tls.recv(2) == b"hi"
            devices.forget("alpha", "beta")
            assert ended.wait(TIMEOUT), "the unpaired device's connection was not cut"
            assert tls.recv(64) == b""
    finally:
        server.shutdown()
        server.server_close()


def test_a_paired_device_that_stays_paired_is_not_cut(devices: Devices) -> None:
    def handler(tls: ssl.SSLSocket, peer: certpair.Peer) -> None:
        while data := tls.recv(64):
            tls.sendall(data)

    server = certpair.make_server(handler, "127.0.0.1", 0, devices.home("alpha"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tls, _ = certpair.connect("127.0.0.1", server.server_address[1], devices.home("beta"))
        with tls:
            tls.sendall(b"1")
            assert tls.recv(1) == b"1"
            devices.trust("alpha", "gamma")  # the store changes; beta is still paired
            with certpair.open_store(devices.home("alpha")) as store:
                assert server.opened.cut_unpaired(store) == 0
            tls.sendall(b"2")
            assert tls.recv(1) == b"2"
    finally:
        server.shutdown()
        server.server_close()


# 4. one verdict for any client's failure ----------------------------------------------

def _refusal_errors(url: str, context: ssl.SSLContext) -> Iterator[tuple[str, BaseException]]:
    """What each HTTP client raises when the server refuses this device."""
    host, port = url.removeprefix("https://").rstrip("/").split(":")
    try:
        httpx.get(url, verify=context, timeout=TIMEOUT)
    except Exception as exc:
        yield "httpx", exc
    try:
        urllib.request.urlopen(url, context=context, timeout=TIMEOUT)
    except Exception as exc:
        yield "urllib", exc

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = context
            kwargs["assert_hostname"] = False
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as session:
        session.mount("https://", Adapter())
        try:
            session.get(url, timeout=TIMEOUT)
        except Exception as exc:
            yield "requests", exc

    async def with_aiohttp() -> None:
        async with aiohttp.ClientSession() as http, http.get(url, ssl=context) as response:
            await response.read()

    try:
        asyncio.run(with_aiohttp())
    except Exception as exc:
        yield "aiohttp", exc
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw, \
                context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            tls.recv(1)
    except Exception as exc:
        yield "ssl", exc


def test_why_refused_gives_not_paired_for_every_http_clients_refusal(
        devices: Devices, alpha_blocking: certpair.trusted.TrustedServer) -> None:
    url = f"https://127.0.0.1:{alpha_blocking.server_address[1]}/"
    context = certpair.client_context(devices.home("gamma"))
    shapes = dict(_refusal_errors(url, context))
    assert set(shapes) == {"httpx", "urllib", "requests", "aiohttp", "ssl"}, shapes
    for client, exc in shapes.items():
        verdict = certpair.why_refused(exc, url)
        assert isinstance(verdict, certpair.NotPaired), (client, repr(exc), verdict)
        assert "refused this device" in str(verdict), (client, verdict)


def test_why_refused_of_an_unreachable_server_is_a_network_error(devices: Devices) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    try:
        httpx.get(f"https://127.0.0.1:{port}/",
                  verify=certpair.client_context(devices.home("beta")), timeout=TIMEOUT)
    except Exception as exc:
        verdict = certpair.why_refused(exc)
    assert type(verdict) is certpair.NetworkError, verdict
    plain = certpair.why_refused(ValueError("no socket here"))
    assert type(plain) is certpair.NetworkError


def test_connection_error_and_refusal_reason_take_an_ssl_error_without_a_reason() -> None:
    bare = ssl.SSLError("made by hand")
    assert not hasattr(bare, "reason") or bare.reason is None
    assert isinstance(certpair.trusted.connection_error(bare, "x:1"), certpair.NetworkError)
    assert certpair.trusted.refusal_reason(bare).startswith("TLS handshake failed")


# 6. every exception in one place ----------------------------------------------------------

def _certpair_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(certpair.__path__, "certpair."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, certpair.CertpairError) and value.__module__.startswith(
                    "certpair") and not value.__name__.startswith("_"):
                found.add(value)
    return found


def test_every_certpair_exception_is_exported_from_certpair_exceptions() -> None:
    exported = {getattr(certpair.exceptions, name) for name in certpair.exceptions.__all__}
    missing = {e.__name__ for e in _certpair_exceptions() - exported}
    assert not missing, f"not in certpair.exceptions: {sorted(missing)}"
    documented = (Path(__file__).resolve().parent.parent / "docs" / "LIBRARY.md").read_text(
        encoding="utf-8").split("## Exceptions", 1)[1]
    for name in certpair.exceptions.__all__:
        assert f"`{name}`" in documented, f"{name} missing from LIBRARY.md's table"


# 8. a clean shutdown ----------------------------------------------------------------------

_SHUTDOWN = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.trustedutil import make_devices
import certpair

async def main():
    devices = make_devices(Path(sys.argv[1]))
    started = asyncio.Event()
    async def handler(reader, writer, peer):
        started.set()
        await reader.read()
    server = await certpair.start_server(handler, "127.0.0.1", 0, devices.home("alpha"))
    port = server.sockets[0].getsockname()[1]
    reader, writer, _ = await certpair.open_connection("127.0.0.1", port, devices.home("beta"))
    writer.write(b"x")
    await writer.drain()
    await started.wait()
    server.close()

asyncio.run(main())
print("done")
"""


def test_start_server_shuts_down_with_a_connection_open_without_a_traceback(
        tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _SHUTDOWN, str(tmp_path), str(root)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "Traceback" not in done.stderr and "CancelledError" not in done.stderr, done.stderr
