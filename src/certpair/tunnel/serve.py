"""``tunnel serve``: accept paired devices over mutual TLS and carry each connection to
one service on this host.

This module runs the command: the listening socket (or systemd's), the
``listening`` event, the check that the service answers, the DNS-SD announcement, the
connections a transit relay hands over, and the accept loop (tunnel/acceptor.py) until
a signal. Each connection, from its handshake to its close, is
:class:`~certpair.tunnel.server.TunnelServer`'s (tunnel/server.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence

from certpair.identity import load_identity
from certpair.relay import RelayAddress
from certpair.relay.serving import RelayServing, own_fingerprints
from certpair.store import TrustStore, open_store
from certpair.tunnel.acceptor import Admit, listen, run_acceptor
from certpair.tunnel.events import Advertised, Failed, Listening, OnEvent, TargetDown
from certpair.tunnel.server import ServeOptions, TunnelServer
from certpair.tunnel.target_check import target_problem

__all__ = ["ServeOptions", "serve_tunnel"]


def _fingerprints(store: TrustStore, devices: frozenset[str] | None) -> list[str] | None:
    """The current fingerprints of the devices ``--allow`` names, for the report."""
    if devices is None:
        return None
    return sorted(p.fingerprint for d in devices if (p := store.peer_by_device(d)))


def _relay_feed(relay: RelayAddress, fingerprint: Callable[[], Sequence[str]],
                on_event: OnEvent,
                ) -> Callable[[Admit], Callable[[], None]]:
    """Connections waiting at ``relay`` (docs/RELAY.md), taken in like accepted ones
    under the label ``relay tcp:R:P`` and a budget of unproven slots of their own;
    mutual TLS decides who gets in, exactly as on the listening port."""
    def feed(admit: Admit) -> Callable[[], None]:
        def status(waiting: bool, reason: str, retry_in: float) -> None:
            if not waiting:
                on_event(Failed(remote=f"relay {relay}",
                                reason=f"{reason}; trying again in {retry_in:g} s"))

        serving = RelayServing(
            relay=relay, fingerprint=fingerprint, service="tunnel", on_status=status,
            hand_over=lambda sock, remote, settle: admit(sock, remote,
                                                         (settle, len(serving.tokens))))
        serving.start()
        return serving.stop

    return feed


def serve_tunnel(options: ServeOptions, on_event: OnEvent, *,
                 listener: socket.socket | None = None,
                 ready: Callable[[], None] | None = None) -> None:
    """Run ``tunnel serve`` until SIGINT/SIGTERM (in the main thread).

    Args:
        options: the target, listen address, peers allowed, limits.
        on_event: receives every :mod:`~certpair.tunnel.events` event, from any thread.
        listener: a listening socket to use instead of binding ``host:port``.
        ready: called once listening (after the :class:`Listening` event).

    Raises:
        NotInitialised, LocalStateError: no identity, or the store is unusable.
        NetworkError: cannot listen.
    """
    with open_store(options.home) as store:
        server = TunnelServer(options, store, on_event)
        sock = listener or listen(options.host, options.port)
        host, port = sock.getsockname()[:2]
        on_event(Listening(host=str(host), port=int(port), details={
            "to": str(options.target),
            "allow": _fingerprints(store, options.allow),
            "proxy_protocol": options.proxy_protocol,
            "max_connections": options.max_connections}))
        # Checked once, without a connection the service would see: a warning only.
        problem = target_problem(options.target, min(options.connect_timeout, 2.0))
        if problem is not None:
            on_event(TargetDown(target=str(options.target), reason=problem))
        if ready is not None:
            ready()
        advertisement = None
        if options.advertise:
            from certpair.tunnel.dnssd import TunnelAdvertisement  # noqa: PLC0415

            identity = load_identity(options.home)
            advertisement = TunnelAdvertisement(name=identity.name,
                                                fingerprint=identity.fingerprint,
                                                port=int(port), listen_host=str(host),
                                                home=options.home)

            def publish() -> None:  # follows this device's key and addresses (announce.py)
                assert advertisement is not None
                advertisement.run(lambda problem, again: on_event(
                    Advertised(problem=problem, again=again)))

            threading.Thread(target=publish, daemon=True, name="certpair-dnssd").start()
        try:
            run_acceptor(sock, server.handle, connections=server.connections,
                         refusals=server.refusals, watch=server.watch, on_event=on_event,
                         drain_timeout=options.drain_timeout, handshakes=server.handshakes,
                         feed=None if options.relay is None else _relay_feed(
                             options.relay, own_fingerprints(options.home), on_event))
        finally:
            server.flush_log()
            if advertisement is not None:
                advertisement.close()
