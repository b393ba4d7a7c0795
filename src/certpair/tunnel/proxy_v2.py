"""The PROXY protocol version 2 header (haproxy's proxy-protocol.txt, section 2.2).

``tunnel serve --proxy-protocol`` sends it to the service before any byte of the
connection, so the service learns the device's address and which paired device it
serves. Besides the addresses it carries these TLVs:

* ``0x20`` ``PP2_TYPE_SSL``: client ``0x07`` (SSL, certificate on this connection and
  session), verify ``0`` (verified), sub-TLV ``0x21`` ``PP2_SUBTYPE_SSL_VERSION``
  ``TLSv1.3``;
* ``0xE0`` (certpair fingerprint): ``sha256:`` + 64 lowercase hex digits, ASCII;
* ``0xE1`` (certpair peer name): the peer's name in this trust store, UTF-8.

``0xE0``-``0xEF`` is the range the specification leaves to applications.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["SIGNATURE", "TLV_FINGERPRINT", "TLV_PEER_NAME", "encode_header"]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TLV_SSL = 0x20
TLV_SSL_VERSION = 0x21
TLV_FINGERPRINT = 0xE0
TLV_PEER_NAME = 0xE1
_VERSION_PROXY = 0x21  # version 2, command PROXY
_TCP4, _TCP6 = 0x11, 0x21
_CLIENT_SSL_CERT = 0x01 | 0x02 | 0x04  # PP2_CLIENT_SSL | CERT_CONN | CERT_SESS


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def encode_header(source: tuple[str, int], destination: tuple[str, int], *,
                  fingerprint: str, peer_name: str) -> bytes:
    """Build the header for one connection.

    Args:
        source: the device's address and port, as the tunnel saw them.
        destination: the tunnel's own address and port for that connection.
        fingerprint: the peer's certificate fingerprint.
        peer_name: the peer's name in the trust store.

    Returns:
        The header bytes: signature, version and command, family, length, addresses,
        TLVs.
    """
    src = ipaddress.ip_address(source[0].split("%")[0])
    dst = ipaddress.ip_address(destination[0].split("%")[0])
    if src.version != dst.version:  # an IPv4 client on a dual-stack socket
        src = src if src.version == 6 else ipaddress.IPv6Address(f"::ffff:{src}")
        dst = dst if dst.version == 6 else ipaddress.IPv6Address(f"::ffff:{dst}")
    family = _TCP4 if src.version == 4 else _TCP6
    addresses = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    ssl_value = struct.pack("!BI", _CLIENT_SSL_CERT, 0) + _tlv(TLV_SSL_VERSION, b"TLSv1.3")
    tlvs = (_tlv(TLV_SSL, ssl_value) + _tlv(TLV_FINGERPRINT, fingerprint.encode("ascii"))
            + _tlv(TLV_PEER_NAME, peer_name.encode("utf-8")))
    body = addresses + tlvs
    return SIGNATURE + struct.pack("!BBH", _VERSION_PROXY, family, len(body)) + body
