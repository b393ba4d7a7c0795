"""``certpair://`` URIs: where the offerer listens, its secret and its fingerprint.

A pairing URI is what ``certpair pair --qr`` shows as a QR code and what
``certpair join URI`` accepts::

    certpair://192.168.1.20:4490/?code=4711-0815-3&fp=P6LB1OX2...

* ``HOST`` is an IPv4 address, a bracketed IPv6 address or a DNS name; ``:PORT`` is
  optional (default 4490).
* ``code`` is the pairing secret in either format (cpace code or hmac key); as
  everywhere, its shape decides the mode.
* ``fp`` (optional) is the offerer's certificate fingerprint: the SHA-256 of its DER in
  unpadded base64url (43 characters, what :func:`format_uri` writes: it keeps the QR code
  small enough for an 80x24 terminal), or ``sha256:`` and 64 hex digits (also read). A
  joiner given one refuses an offerer whose certificate does not match it, before
  sending any proof.
* ``relay`` and ``nameplate`` (optional; ``pair --relay``): the transit relay where the
  offerer also waits (``tcp:HOST:PORT``, percent-encoded brackets for IPv6) and the
  code's public meeting point there. A ``relay`` needs a ``nameplate``.

Parsing is strict: anything else (another scheme, user info, a path, a fragment, an
unknown or repeated parameter, a bad host, port, code or fingerprint) is
:class:`MalformedURI`. The QR helpers import ``segno`` only when called.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from certpair.codes import Secret, parse_secret, with_nameplate
from certpair.errors import BadInput
from certpair.ports import PAIRING_PORT
from certpair.relay import RelayAddress, parse_relay

__all__ = [
    "DEFAULT_URI_PORT",
    "SCHEME",
    "MalformedURI",
    "PairingURI",
    "format_uri",
    "looks_like_uri",
    "parse_uri",
    "qr_terminal_text",
    "valid_host",
    "write_qr_png",
]

SCHEME = "certpair"
DEFAULT_URI_PORT = PAIRING_PORT
_MAX_URI_LENGTH = 1024
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_FINGERPRINT_B64_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", re.ASCII)
_URI_RE = re.compile(
    r"(?i:certpair)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"/?"
    r"\?(?P<query>[A-Za-z0-9=&:%._~-]*)",
    re.ASCII,
)
_PARAM_RE = re.compile(r"(?P<key>[a-z]+)=(?P<value>(?:[A-Za-z0-9:._~-]|%[0-9A-Fa-f]{2})+)",
                       re.ASCII)
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_KNOWN_PARAMS = frozenset({"code", "fp", "relay", "nameplate"})


class MalformedURI(BadInput):
    """The text is not a well-formed ``certpair://`` URI."""


@dataclass(frozen=True, kw_only=True)
class PairingURI:
    """A parsed pairing URI.

    ``host`` carries no brackets, even for IPv6. ``fingerprint`` is the lowercase
    ``sha256:`` form, or None when the URI has no ``fp``.
    """

    host: str
    port: int
    secret: Secret = field(repr=False)
    fingerprint: str | None
    relay: RelayAddress | None = None


def looks_like_uri(text: str) -> bool:
    """Tell whether a command-line argument is meant as a URI rather than a secret or host.

    Args:
        text: the argument as typed.

    Returns:
        True when it starts with ``certpair:`` (any case) or contains ``://``.
    """
    return text.strip()[: len(SCHEME) + 1].lower() == f"{SCHEME}:" or "://" in text


def _check_host(host: str) -> str:
    if host.startswith("["):
        try:
            if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host, re.ASCII):
                raise ValueError(host)  # a zone (%eth0) means nothing to another device
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise MalformedURI("the URI's host is not a valid IPv6 address") from None
    if all(ch.isdigit() or ch == "." for ch in host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise MalformedURI("the URI's host is not a valid IPv4 address") from None
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in host.split(".")):
        raise MalformedURI("the URI's host is not a valid host name")
    return host


def valid_host(host: str) -> bool:
    """Tell whether a host (IPv6 without brackets) can stand in a certpair URI.

    Args:
        host: an address or DNS name.

    Returns:
        True for an IPv4 or IPv6 address (no zone) or an RFC 1123 host name.
    """
    try:
        _check_host(f"[{host}]" if ":" in host else host)
    except MalformedURI:
        return False
    return True


def _check_port(text: str | None) -> int:
    if text is None:
        return DEFAULT_URI_PORT
    port = int(text)
    if not 1 <= port <= 65535:
        raise MalformedURI("the URI's port is outside 1..65535")
    return port


def _params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in query.split("&"):
        match = _PARAM_RE.fullmatch(part)
        if match is None:
            raise MalformedURI("the URI's query is not a list of key=value parameters")
        key = match["key"]
        if key not in _KNOWN_PARAMS:
            raise MalformedURI(f"the URI has an unknown parameter {key!r}")
        if key in params:
            raise MalformedURI(f"the URI repeats the parameter {key!r}")
        params[key] = urllib.parse.unquote(match["value"], errors="strict")
    return params


def parse_uri(text: str) -> PairingURI:
    """Parse a ``certpair://HOST[:PORT]/?code=SECRET[&fp=FINGERPRINT]`` URI.

    Surrounding white space is ignored; everything else must be exact.

    Args:
        text: the URI, e.g. as scanned from a QR code.

    Returns:
        The host, port, parsed secret and (optional) fingerprint.

    Raises:
        MalformedURI: not a well-formed certpair URI.
        BadInput: the ``code`` is not a valid secret (its subclasses tell which way:
            malformed, wrong check character, too weak).
    """
    text = text.strip()
    if len(text) > _MAX_URI_LENGTH:
        raise MalformedURI("the URI is too long")
    if not text.lower().startswith(f"{SCHEME}://"):
        raise MalformedURI(f"not a {SCHEME}:// URI")
    match = _URI_RE.fullmatch(text)
    if match is None:
        raise MalformedURI(
            f"malformed {SCHEME}:// URI (expected {SCHEME}://HOST:PORT/?code=…&fp=…)"
        )
    host = _check_host(match["host"])
    port = _check_port(match["port"])
    params = _params(match["query"])
    if "code" not in params:
        raise MalformedURI("the URI has no code parameter")
    secret = parse_secret(params["code"])
    fingerprint = params.get("fp")
    if fingerprint is not None:
        fingerprint = _read_fingerprint(fingerprint)
    relay = None
    if "relay" in params:
        if "nameplate" not in params:
            raise MalformedURI("the URI names a relay but no nameplate to meet at")
        try:
            relay = parse_relay(params["relay"])
        except BadInput as exc:
            raise MalformedURI(f"the URI's relay: {exc}") from None
    if "nameplate" in params:
        if secret.nameplate is not None:
            raise MalformedURI("the URI gives the nameplate twice")
        secret = with_nameplate(secret, params["nameplate"])
    return PairingURI(host=host, port=port, secret=secret, fingerprint=fingerprint,
                      relay=relay)


def _read_fingerprint(text: str) -> str:
    """``sha256:HEX`` from either form of ``fp`` (see the module documentation)."""
    if _FINGERPRINT_B64_RE.fullmatch(text):
        return "sha256:" + base64.urlsafe_b64decode(text + "=").hex()
    if _FINGERPRINT_RE.fullmatch(text.lower()):
        return text.lower()
    raise MalformedURI("the URI's fp is not a SHA-256 fingerprint (43 base64url characters, "
                       "or sha256: followed by 64 hex digits)")


def _write_fingerprint(fingerprint: str) -> str:
    """The short (base64url) form of a ``sha256:HEX`` fingerprint."""
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        raise MalformedURI("the fingerprint is not in lowercase sha256: form")
    raw = bytes.fromhex(fingerprint.removeprefix("sha256:"))
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def format_uri(*, host: str, port: int, secret: Secret, fingerprint: str | None,
               relay: RelayAddress | None = None) -> str:
    """Build the pairing URI that :func:`parse_uri` reads back unchanged.

    Args:
        host: IPv4 or IPv6 address (without brackets) or DNS name of the offerer.
        port: the offerer's TCP port.
        secret: the active secret; its display form goes into ``code``.
        fingerprint: the offerer's certificate fingerprint, or None to leave ``fp`` out.
        relay: the relay where the offerer also waits (the secret's nameplate goes too).

    Returns:
        The URI text.

    Raises:
        MalformedURI: the host, port or fingerprint cannot be put in a URI.
    """
    shown = f"[{host}]" if ":" in host else host
    query = f"code={secret.display.rsplit('+', 1)[-1]}"
    if fingerprint is not None:
        query += f"&fp={_write_fingerprint(fingerprint)}"
    if relay is not None:
        query += f"&relay={urllib.parse.quote(str(relay), safe=':')}"
    if secret.nameplate is not None:
        query += f"&nameplate={secret.nameplate}"
    uri = f"{SCHEME}://{shown}:{port}/?{query}"
    parsed = parse_uri(uri)
    if (parsed.port, parsed.fingerprint) != (port, fingerprint):
        raise MalformedURI("the fingerprint is not in lowercase sha256: form")
    return uri


def qr_terminal_text(uri: str) -> str:
    """Render a URI as a QR code for a terminal: half blocks, two modules per character
    cell; error correction L and a two-module quiet zone keep a pairing URI with an IPv4
    host at 21 lines, so that it fits an 80x24 terminal with the code and the countdown
    under it (a screen is not a crumpled label: L's 7 % is plenty).

    Args:
        uri: the text to encode.

    Returns:
        Lines of Unicode block characters, ending with a newline.
    """
    import segno  # noqa: PLC0415  # only `pair --qr` needs it; keeps start-up fast

    buffer = io.StringIO()
    segno.make(uri, error="l", micro=False).terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue()


def write_qr_png(uri: str, path: Path, *, replace: bool = False) -> None:
    """Write a URI (it carries the live secret) as a QR code image in PNG format.

    The file is created 0600 with ``O_EXCL``: it is never readable by others, whatever
    the umask, and an existing file is never written through (nor a planted symlink).

    Args:
        uri: the text to encode.
        path: the file to create.
        replace: replace an existing file atomically (a new 0600 file in the same
            directory, renamed over it) instead of refusing.

    Raises:
        BadInput: the file exists (and ``replace`` is false) or cannot be written.
    """
    import segno  # noqa: PLC0415  # only `pair --qr-png` needs it

    image = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(image, kind="png", scale=8, border=4)
    target = path
    if replace:
        target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise BadInput(f"the QR image {path} already exists; --force replaces it") from None
    except OSError as exc:
        raise BadInput(f"cannot write the QR image {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(image.getvalue())
        if replace:
            os.replace(target, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise BadInput(f"cannot write the QR image {path}: {exc.strerror or exc}") from exc
