"""``tunnel serve --to NAME:PORT`` cannot be re-pointed by its name (issue 19).

The loopback rule (the service behind a tunnel must be on this host unless
``--unsafe-target``) was checked once, on what NAME resolved to at start, and every
connection then resolved NAME again: whoever controls NAME's answers (a DNS server, a
hosts file entry) could send the tunnelled bytes anywhere. The resolver here is the
adversary: it answers loopback when the tunnel starts and another address afterwards.
The "other" address is 127.0.0.2 so that no test traffic leaves the host; the property
checked is that the bytes go to the address the rule was checked on, and only there.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from certpair.errors import BadInput
from certpair.tunnel.targets import parse_target

NAME = "service.rebind.invalid"


class Resolver:
    """getaddrinfo that answers ``NAME`` with ``self.answer`` (and asks the real one
    for everything else)."""

    def __init__(self, real: Any, answer: str) -> None:
        self.real, self.answer, self.asked = real, answer, 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return self.real(host, port, *args, **kwargs)
        self.asked += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.answer, int(port or 0)))]


def test_a_name_re_pointed_after_start_does_not_move_the_tunnels_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as honest:
        port = honest.getsockname()[1]
        try:
            elsewhere = socket.create_server(("127.0.0.2", port))
        except OSError:
            pytest.skip("127.0.0.2 has that port taken")
        with elsewhere:
            resolver = Resolver(socket.getaddrinfo, "127.0.0.1")
            monkeypatch.setattr(socket, "getaddrinfo", resolver)
            target = parse_target(f"{NAME}:{port}", unsafe=False)
            resolver.answer = "127.0.0.2"  # the name now points elsewhere
            elsewhere.settimeout(0)
            honest.settimeout(5.0)  # the old code's connection went elsewhere: fail, not hang
            for _ in range(3):
                with target.dial(5.0) as sock:
                    accepted, _ = honest.accept()
                    accepted.close()
                    assert sock.getpeername()[0] == "127.0.0.1"
            with pytest.raises(BlockingIOError):
                elsewhere.accept()  # nothing ever reached the re-pointed address
            assert resolver.asked == 1


def test_a_name_that_resolves_off_host_at_start_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(socket.getaddrinfo, "192.0.2.7"))
    with pytest.raises(BadInput, match="not on this host"):
        parse_target(f"{NAME}:8080", unsafe=False)
