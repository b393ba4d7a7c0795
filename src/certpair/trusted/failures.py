"""What went wrong with a trusted connection, in words for users and for logs."""

from __future__ import annotations

import contextlib
import re
import ssl

from certpair.errors import CertpairError, Expired, LocalStateError, NetworkError
from certpair.ports import (
    ALPN_PAIRING,
    ALPN_SERVE,
    ALPN_TUNNEL,
    PAIRING_PORT,
    SERVE_PORT,
    TUNNEL_PORT,
    cannot_reach,
    service_of,
)
from certpair.trusted.contexts import NotPaired

__all__ = [
    "check_service",
    "close_notify",
    "connection_cut",
    "connection_error",
    "refusal_reason",
    "strict_eof",
    "why_refused",
]

# Each certpair protocol: the command that listens for it, and its default port.
_LISTENERS = {
    ALPN_PAIRING: ("certpair pair", PAIRING_PORT),
    ALPN_SERVE: ("certpair serve", SERVE_PORT),
    ALPN_TUNNEL: ("certpair tunnel serve", TUNNEL_PORT),
}

# What a client offering only trusted certpair ALPN names reads from a pairing port
# (Python leaves `reason` empty for this alert with some OpenSSL versions: the text too).
_PAIRING_PORT_ALERT = "TLSV1_ALERT_NO_APPLICATION_PROTOCOL"

# What OpenSSL says when the other end answers with something that is not TLS.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG",
                      "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"})

# Alerts a TLS 1.3 client reads when the server did not accept its certificate.
_REFUSED_ALERTS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED",
})


# How a connection that was up ends when the other side dies (SIGKILL, power loss, a
# cable pulled): a reset, or a TCP close without TLS's close_notify (a "ragged" EOF;
# trusted client sockets do not suppress it, so it never reads as an orderly end).
_CUT = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError)
_CUT_REASONS = frozenset({"UNEXPECTED_EOF_WHILE_READING", "UNEXPECTED_RECORD"})
# OpenSSL's own text ends in "(_ssl.c:1234)": never shown.
_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def connection_cut(remote: str) -> NetworkError:
    """The connection to ``remote`` broke off: its process died or the network failed."""
    return NetworkError(f"the connection to {remote} was cut (its process stopped, or the "
                        "network failed)")


def strict_eof(tls: ssl.SSLSocket) -> ssl.SSLSocket:
    """Make a TCP close without close_notify raise (``ssl.SSLEOFError``, then
    :func:`connection_cut`) instead of reading as an orderly end: a peer that died is
    never taken for one that closed on purpose. Returns ``tls``."""
    # Set by wrap_socket and read by SSLSocket.read on every EOF (typeshed omits it).
    setattr(tls, "suppress_ragged_eofs", False)  # noqa: B010
    return tls


def close_notify(tls: ssl.SSLSocket, timeout: float) -> None:
    """End TLS in order (close_notify) on a connection whose handshake completed, so the
    other side tells a deliberate close from a cut one; errors are ignored."""
    if tls.version() is None:
        return
    with contextlib.suppress(OSError, ValueError):
        tls.settimeout(timeout)
        tls.unwrap()


def _text(error: ssl.SSLError) -> str:
    reason = _reason(error)
    if reason:
        return reason.lower().replace("_", " ")
    return _SOURCE.sub("", str(error.strerror or error)).strip() or type(error).__name__


def connection_error(error: BaseException, remote: str) -> CertpairError:
    """Translate a client-side socket or TLS failure into a certpair error.

    Args:
        error: what connecting, the handshake or a read raised.
        remote: ``host:port`` for the message.

    Returns:
        NotPaired if a side rejected the other's certificate, Expired for a timeout,
        NetworkError otherwise (:func:`connection_cut` for a connection that broke off).
    """
    if isinstance(error, CertpairError):
        return error
    reason = _reason(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return NotPaired(f"{remote} is not a paired device")
    if isinstance(error, ssl.SSLError) and reason in _REFUSED_ALERTS:
        return NotPaired(f"{remote} refused this device: it is not paired there")
    if isinstance(error, TimeoutError):
        return Expired(f"{remote} did not answer in time")
    if isinstance(error, ssl.SSLError) and (reason == _PAIRING_PORT_ALERT
                                            or "no application protocol" in str(error)):
        return NetworkError(f"{remote} is a certpair pairing port (`certpair pair`), not a "
                            "trusted one: give the port `certpair serve` listens on "
                            f"(default {SERVE_PORT})")
    if isinstance(error, _CUT) or (isinstance(error, ssl.SSLError)
                                   and reason in _CUT_REASONS):
        return connection_cut(remote)
    if isinstance(error, ssl.SSLError) and reason in _NOT_TLS:
        return NetworkError(f"{remote} does not speak TLS: it is not a certpair port; "
                            "check the port")
    if isinstance(error, ssl.SSLError):
        return NetworkError(f"TLS with {remote} failed: {_text(error)}")
    if isinstance(error, OSError):
        return cannot_reach(remote, error)
    return NetworkError(f"the connection to {remote} failed")


def check_service(connection: ssl.SSLSocket | ssl.SSLObject, own: str, remote: str) -> None:
    """Stop at once if ALPN shows the server is another kind of certpair port.

    A certpair client offers its own protocol first and the others after it
    (:func:`certpair.ports.alpn_offer`), so a server of another kind selects its own
    name; a server that selects none (another implementation) is taken as is.

    Args:
        connection: a client connection after its handshake.
        own: the ALPN name of the protocol this client speaks (``certpair.ports``).
        remote: ``host:port`` for the message.

    Raises:
        NetworkError: the server is a certpair port of another kind; the message names it
            and the port to give instead.
    """
    kind = service_of(connection.selected_alpn_protocol(), own)
    if kind is not None:
        command, port = _LISTENERS.get(own, ("the right command", 0))
        raise NetworkError(f"{remote} is a `{kind}` port, not a `{command}` one: give the "
                           f"port `{command}` listens on (default {port})")


def refusal_reason(error: BaseException) -> str:
    """Say in a few words why a server refused a connection (for logs; no secrets).

    Args:
        error: what the server's handshake or :func:`peer_of` raised.

    Returns:
        A short reason such as ``not a paired device``.
    """
    if isinstance(error, NotPaired | ssl.SSLCertVerificationError):
        return "not a paired device"
    if isinstance(error, LocalStateError):
        return "this device's trust store is unusable"
    if isinstance(error, TimeoutError):
        return "handshake timed out"
    if isinstance(error, ssl.SSLError):
        reason = _reason(error)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate"
        if reason in _REFUSED_ALERTS:
            return "the other device does not trust this one"
        return f"TLS handshake failed: {(reason or 'error').lower().replace('_', ' ')}"
    return "connection lost during the handshake"


def _reason(error: BaseException) -> str | None:
    """OpenSSL's reason code of an SSLError; None when it has none (an ``SSLError``
    made by hand, or by a library that wraps it, may lack the attribute)."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else None


# Where wrapping libraries keep the exception they wrap: urllib's URLError.reason,
# aiohttp's os_error / certificate_error, urllib3's MaxRetryError.reason; the rest use
# the exception chain (httpx, httpcore) or args (requests).
_WRAPPED = ("reason", "os_error", "certificate_error", "original_error")
_LIMIT = 32  # exceptions examined at most: chains are short, cycles are possible


def why_refused(error: BaseException, remote: str = "the server") -> CertpairError:
    """Say what a failed connection made with a certpair context means.

    Any HTTP or TLS client's exception works (httpx, aiohttp, requests, urllib,
    ``ssl``, asyncio): the exception, its cause and context, and what wrapping
    libraries hold are searched for the TLS or socket failure underneath, which is then
    judged as :func:`connection_error` does.

    Args:
        error: what the client raised.
        remote: how the message names the other side (e.g. ``host:port``).

    Returns:
        :class:`NotPaired` if either side refused the other's certificate (this device
        is not paired there, or the server is not a paired device), :class:`Expired`
        for a timeout, :class:`NetworkError` otherwise (including a connection that
        closed with no reason given). Raise it, or test it with ``isinstance``.
    """
    found = _underlying(error)
    if found is None:
        return NetworkError(f"the connection to {remote} failed: "
                            f"{type(error).__name__}: {error}")
    return connection_error(found, remote)


def _underlying(error: BaseException) -> BaseException | None:
    """The most telling exception below ``error``: a certpair error, else a TLS error,
    else a timeout, else any socket error; breadth first, cycles cut."""
    seen: set[int] = set()
    queue = [error]
    best: BaseException | None = None
    rank = {CertpairError: 0, ssl.SSLError: 1, TimeoutError: 2, OSError: 3}
    best_rank = len(rank)
    while queue and len(seen) < _LIMIT:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        for kind, place in rank.items():
            if isinstance(current, kind) and place < best_rank:
                best, best_rank = current, place
                break
        inner = [current.__cause__, current.__context__]
        inner += [getattr(current, name, None) for name in _WRAPPED]
        inner += list(current.args)
        queue += [each for each in inner if isinstance(each, BaseException)]
    return best
