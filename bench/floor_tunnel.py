"""The least a tunnel end in Python can do per connection, run as a process by the tunnel
benchmark (bench/tunnel.py): the floor under ``certpair tunnel`` for fresh connections.

``python -m bench.floor_tunnel server|client LISTEN_PORT TO_PORT CERT KEY CAFILE``:
accept on loopback, a thread started per connection, mutual TLS 1.3 with Python's
``ssl`` (the same certificates as both other tunnels, no session tickets, one
blocking ``SSLSocket`` handshake), a connection onward, and bytes copied both ways
with ``select`` until both sides ended (an end is passed on as TCP's half-close, on the
TLS side too: no close_notify). No trust store, no peer check beyond OpenSSL's, no
limits, no events, no audit rows, no preamble, no truncation rules:
what certpair's tunnel does on top of this is what its figures pay for.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import sys
import threading

_LOOPBACK = "127.0.0.1"


def _copy(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Both directions until both ended (an EOF on one side ends the other's writing)."""
    other: dict[socket.socket, socket.socket] = {tls: plain, plain: tls}
    open_ = [tls, plain]
    while open_:
        readable, _, _ = select.select(open_, [], [])
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            if data:
                other[sock].sendall(data)
                continue
            open_.remove(sock)
            with contextlib.suppress(OSError):  # TCP's half-close even under TLS: the least
                socket.socket.shutdown(other[sock], socket.SHUT_WR)


def _serve(context: ssl.SSLContext, server: bool, accepted: socket.socket,
           to_port: int) -> None:
    onward = socket.create_connection((_LOOPBACK, to_port))
    try:
        for sock in (accepted, onward):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server:
            _copy(context.wrap_socket(accepted, server_side=True), onward)
        else:
            _copy(context.wrap_socket(onward), accepted)
    except OSError:
        pass
    finally:
        accepted.close()
        onward.close()


def main(argv: list[str]) -> None:
    role, listen_port, to_port, cert, key, cafile = argv
    server = role == "server"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = False
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # an end without close_notify: an EOF
    if server:
        context.num_tickets = 0
    listener = socket.create_server((_LOOPBACK, int(listen_port)), backlog=1024)
    while True:
        accepted, _ = listener.accept()
        threading.Thread(target=_serve, args=(context, server, accepted, int(to_port)),
                         daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
