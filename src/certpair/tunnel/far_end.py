"""What ``tunnel connect`` tells about the far end: why a connection ended, and the key
sync it runs with it (tunnel/preamble.py).

* The status byte: ``service unavailable``, ``not allowed``, ``no longer trusted`` end
  the connection with that reason (the local client gets a reset, never a clean end);
  a ready status with the rotation flag starts a key sync in the background.
* A connection that broke without a word (a reset, an EOF without close_notify: the
  far end cut it, or stopped) is explained by one ``CHECK`` connection: refused there
  means the far end no longer trusts this device, a refused TCP connection that its
  tunnel stopped. One check per second at most, whatever the number of connections cut.
* A key sync runs on a ``SYNC`` connection, one at a time.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from certpair.errors import CertpairError, NetworkError
from certpair.store import Peer, TrustStore
from certpair.trusted import NotPaired, connection_error, presented_fingerprint
from certpair.tunnel.events import OnEvent, Synced
from certpair.tunnel.link import TlsLink
from certpair.tunnel.preamble import (
    ROTATION_FLAG,
    Intent,
    LinkStream,
    read_exactly,
    refused_text,
    speaks_preamble,
    status_text,
)
from certpair.tunnel.pump import DONE, Relay

if TYPE_CHECKING:
    from certpair.tunnel.connect import ConnectOptions

__all__ = ["FarEnd"]

Open = Callable[[float, Intent], tuple[TlsLink, Peer, object]]
_CHECK_EVERY = 1.0
# What the pump says when the stream ended without a word from the far end.
_SILENT = ("the tunnel connection closed without close_notify", "the tunnel connection broke")


class FarEnd:
    """The connecting side's account of the far end (see the module documentation)."""

    def __init__(self, options: ConnectOptions, store: TrustStore, open_: Open,
                 on_event: OnEvent) -> None:
        self.options, self.store, self.open, self.on_event = options, store, open_, on_event
        self.name = options.peer.name
        self._syncing = threading.Lock()
        self._checked: tuple[float, str | None] = (-_CHECK_EVERY, None)
        self._check_lock = threading.Lock()

    def on_status(self, code: int | None) -> str | None:
        """The relay's status callback: None to carry on, else why the connection ends."""
        if code is None:
            return f"{self.name}'s tunnel closed the connection before answering"
        if code & ROTATION_FLAG and self.options.key_sync is not None:
            threading.Thread(target=self.sync, name="certpair-tunnel-sync",
                             daemon=True).start()
        return status_text(code, self.name)

    def of_end(self, reason: str, relay: Relay) -> str:
        """The reason a carried connection ended, told as truthfully as we can."""
        if reason == DONE or relay.cut_reason is not None:
            return reason
        if "refused this device" in reason:
            return self.refused(relay.link)
        if reason.startswith(_SILENT):
            verdict = self.check()
            if verdict is not None:
                return f"{verdict} ({reason})"
        return reason

    def refused(self, link: TlsLink | None) -> str:
        """Refused by the far end's trust: with a hint when this device's current key is
        a rotation the far end never acknowledged."""
        hint = ""
        try:
            own = presented_fingerprint(link.tls) if link is not None else None
            peer = self.store.peer_by_device(self.options.peer.device_id)
            told = self.store.told_peers(own) if own else set()
            if own and peer is not None and told and peer.fingerprint not in told:
                hint = (f", or it never learned this device's new key {own} (a rotation "
                        "finished without it)")
        except CertpairError:
            pass
        return refused_text(self.name, hint)

    def check(self) -> str | None:
        """Why the far end ended a connection without a word, from one CHECK connection
        (None: it lets this device through, so the stream just broke)."""
        with self._check_lock:
            at, verdict = self._checked
            if time.monotonic() - at < _CHECK_EVERY:
                return verdict
            verdict = self._check()
            self._checked = (time.monotonic(), verdict)
            return verdict

    def _check(self) -> str | None:
        deadline = time.monotonic() + min(self.options.connect_timeout, 5.0)
        link: TlsLink | None = None
        try:
            link, _, _ = self.open(deadline, Intent.CHECK)
            if not speaks_preamble(link):
                return None
            answer = read_exactly(link, 1, deadline)
        except NotPaired as exc:
            return self.refused(link) if "refused this device" in str(exc) else str(exc)
        except CertpairError as exc:
            # Nothing to connect to (rather than a TLS failure): the tunnel is gone.
            if isinstance(exc, NetworkError) and str(exc).startswith("cannot reach"):
                return (f"{self.name}'s tunnel stopped: nothing accepts connections at "
                        f"its address any more ({exc})")
            return None
        except (OSError, ssl.SSLError) as exc:
            found = connection_error(exc, f"{self.options.host}:{self.options.port}")
            return self.refused(link) if isinstance(found, NotPaired) else None
        finally:
            if link is not None:
                link.sock.close()
        return status_text(answer[0], self.name) if answer else None

    def sync(self) -> None:
        """Run the key sync with the far end on a connection of its own (one at a time;
        reported as a :class:`Synced` event)."""
        key_sync = self.options.key_sync
        if key_sync is None or not self._syncing.acquire(blocking=False):
            return
        link: TlsLink | None = None
        peer = self.options.peer
        try:
            deadline = time.monotonic() + self.options.connect_timeout
            link, peer, where = self.open(deadline, Intent.SYNC)
            if not speaks_preamble(link):
                return  # an older tunnel serve: it does not carry the sync
            status = read_exactly(link, 1, deadline)
            refusal = status_text(status[0], self.name) if status else "no answer"
            if refusal is not None:
                raise NetworkError(refusal)
            stream = LinkStream(link, deadline)
            told, heard = key_sync.run(stream.recv, stream.send, peer,
                                       link.tls.getpeercert(binary_form=True) or b"",
                                       self.store, str(where))
            if told is not None or heard is not None:
                self.on_event(Synced(remote=self._remote(), peer=peer, told=told,
                                     heard=heard))
        except (CertpairError, OSError, ssl.SSLError) as exc:
            self.on_event(Synced(remote=self._remote(), peer=peer, error=str(exc)))
        finally:
            if link is not None:
                link.sock.close()
            self._syncing.release()

    def _remote(self) -> str:
        host = self.options.host
        return f"[{host}]:{self.options.port}" if ":" in host else f"{host}:{self.options.port}"
