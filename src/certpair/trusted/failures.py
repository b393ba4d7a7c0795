"""What went wrong with a trusted connection, in words for users and for logs."""

from __future__ import annotations

import ssl

from certpair.errors import CertpairError, Expired, NetworkError
from certpair.ports import SERVE_PORT
from certpair.trusted.contexts import NotPaired

__all__ = [
    "connection_error",
    "refusal_reason",
]

# What a client offering only trusted certpair ALPN names reads from a pairing port
# (Python leaves `reason` empty for this alert with some OpenSSL versions: the text too).
_PAIRING_PORT_ALERT = "TLSV1_ALERT_NO_APPLICATION_PROTOCOL"

# Alerts a TLS 1.3 client reads when the server did not accept its certificate.
_REFUSED_ALERTS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED",
})


def connection_error(error: BaseException, remote: str) -> CertpairError:
    """Translate a client-side socket or TLS failure into a certpair error.

    Args:
        error: what connecting, the handshake or a read raised.
        remote: ``host:port`` for the message.

    Returns:
        NotPaired if a side rejected the other's certificate, Expired for a timeout,
        NetworkError otherwise.
    """
    if isinstance(error, CertpairError):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        return NotPaired(f"{remote} is not a paired device")
    if isinstance(error, ssl.SSLError) and error.reason in _REFUSED_ALERTS:
        return NotPaired(f"{remote} refused this device: it is not paired there")
    if isinstance(error, TimeoutError):
        return Expired(f"{remote} did not answer in time")
    if isinstance(error, ssl.SSLError) and (error.reason == _PAIRING_PORT_ALERT
                                            or "no application protocol" in str(error)):
        return NetworkError(f"{remote} is a certpair pairing port (`certpair pair`), not a "
                            "trusted one: give the port `certpair serve` listens on "
                            f"(default {SERVE_PORT})")
    if isinstance(error, ssl.SSLError):
        return NetworkError(f"TLS with {remote} failed: {error.reason or error}")
    if isinstance(error, OSError):
        return NetworkError(f"cannot reach {remote}: {error.strerror or error}")
    return NetworkError(f"the connection to {remote} failed")


def refusal_reason(error: BaseException) -> str:
    """Say in a few words why a server refused a connection (for logs; no secrets).

    Args:
        error: what the server's handshake or :func:`peer_of` raised.

    Returns:
        A short reason such as ``not a paired device``.
    """
    if isinstance(error, NotPaired | ssl.SSLCertVerificationError):
        return "not a paired device"
    if isinstance(error, TimeoutError):
        return "handshake timed out"
    if isinstance(error, ssl.SSLError):
        if error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate"
        if error.reason in _REFUSED_ALERTS:
            return "the other device does not trust this one"
        return f"TLS handshake failed: {(error.reason or 'error').lower().replace('_', ' ')}"
    return "connection lost during the handshake"
