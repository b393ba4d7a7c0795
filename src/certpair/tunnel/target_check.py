"""Is anything listening at ``tunnel serve``'s target? Checked once at start, to warn.

A test connection would be a connection the service sees (and counts, and logs). On
Linux the kernel's socket tables answer without one: ``/proc/net/tcp``/``tcp6`` list the
listening TCP sockets of this network namespace, ``/proc/net/unix`` the listening Unix
sockets by path. Where they cannot answer (another system, or a target on another host
under ``--unsafe-target``), a connection is made after all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

from certpair.tunnel.targets import Target

__all__ = ["target_problem"]

_NET = Path("/proc/net")  # this network namespace's socket tables
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags column


def target_problem(target: Target, timeout: float = 2.0) -> str | None:
    """Why ``target`` cannot be reached now, or None if something listens there.

    Args:
        target: the service.
        timeout: seconds for a test connection, where one is needed.
    """
    try:
        answer = _unix(target.path) if target.path else _tcp(target.host, target.port)
    except OSError:
        answer = None  # the tables cannot say: try for real
    if answer is not None:
        return answer or None
    try:
        target.dial(timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _unix(path: str) -> str | None:
    """'' if a Unix socket listens at ``path``, why not otherwise; None: cannot tell."""
    if not Path(path).exists():
        return "no such file"
    for line in _rows(_NET / "unix"):
        fields = line.split()
        if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & _ACCEPTING:
            return ""
    return "nothing listens on that socket"


def _rows(table: Path) -> Iterator[str]:
    """The rows of a socket table after its header, one at a time: a busy host's table
    holds a row per socket (tens of thousands in TIME_WAIT after a load), and reading
    it whole made ``tunnel serve``'s start its peak of memory (~8 MB at 23,000 rows)."""
    with table.open(encoding="ascii", errors="replace") as rows:
        next(rows, None)
        yield from rows


def _tcp(host: str, port: int) -> str | None:
    """'' if a TCP socket of this namespace listens on ``port`` at an address ``host``
    names (or any address), why not otherwise; None: cannot tell."""
    try:
        wanted = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in
                  socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return None
    if not all(address.is_loopback for address in wanted):
        return None  # elsewhere: only a connection tells
    for name, size in (("tcp", 4), ("tcp6", 16)):
        with contextlib.suppress(FileNotFoundError):
            for line in _rows(_NET / name):
                fields = line.split()
                if len(fields) < 4 or fields[3] != _LISTEN:
                    continue
                address_hex, port_hex = fields[1].split(":")
                if int(port_hex, 16) != port:
                    continue
                address = _address(address_hex, size)
                if address.is_unspecified or address in wanted or (
                        isinstance(address, ipaddress.IPv6Address)
                        and address.ipv4_mapped in wanted):
                    return ""
    return "connection refused (nothing listens there)"


def _address(text: str, size: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
    return ipaddress.ip_address(words)
