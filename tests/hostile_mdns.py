"""A hostile mDNS announcer: ``python -m tests.hostile_mdns COUNT`` sends, COUNT times
every 0.1 s on 127.0.0.1, a ``_certpair._tcp`` service whose instance name holds a
control character. zeroconf refuses to build such a name, so the packet (RFC 6762
response, no name compression) is made here by hand.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

SERVICE = "_certpair._tcp.local."
INSTANCE = f"bad\x07name.{SERVICE}"
HOST = "hostile.local."
_IN_FLUSH, _IN = 0x8001, 0x0001
_PTR, _SRV, _TXT, _A = 12, 33, 16, 1


def _name(text: str) -> bytes:
    out = b""
    for label in text.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _record(owner: str, rtype: int, rclass: int, rdata: bytes) -> bytes:
    return _name(owner) + struct.pack("!HHIH", rtype, rclass, 120, len(rdata)) + rdata


def packet() -> bytes:
    txt = b"".join(bytes([len(item)]) + item for item in (b"v=1", b"mode=cpace", b"name=evil"))
    answers = [
        _record(SERVICE, _PTR, _IN, _name(INSTANCE)),
        _record(INSTANCE, _SRV, _IN_FLUSH, struct.pack("!HHH", 0, 0, 4490) + _name(HOST)),
        _record(INSTANCE, _TXT, _IN_FLUSH, txt),
        _record(HOST, _A, _IN_FLUSH, socket.inet_aton("127.0.0.1")),
    ]
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, len(answers), 0, 0)
    return header + b"".join(answers)


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    data = packet()
    for _ in range(int(sys.argv[1])):
        sock.sendto(data, ("224.0.0.251", 5353))
        time.sleep(0.1)  # the pace of a beacon, not synchronisation


if __name__ == "__main__":
    main()
