"""Settling an unconfirmed pairing the way a user would: the real ``serve`` and
``ping`` commands between the two homes, in forked processes (no interpreter start)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["heal", "settle"]

_FORK = multiprocessing.get_context("fork")
WAIT = 20.0


def _cli(args: list[str], out: int, err: int) -> None:
    from certpair.cli.main import cli  # in the child only

    os.dup2(out, 1)
    os.dup2(err, 2)
    # A parent under pytest has replaced sys.stdout/stderr; write to the real fds.
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115  # lives as long as the child
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    code = 0
    try:
        cli.main(args, prog_name="certpair")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def heal(alpha_home: Path, beta_home: Path) -> tuple[int, str, str]:
    """``serve`` on alpha, ``ping`` from beta (forked, the real commands).

    Returns:
        ping's exit status, ping's stderr, and serve's JSON lines after ``listening``.
    """
    import certpair.cli.main  # noqa: F401  # once here, not in every child

    serve_out, serve_w = os.pipe()
    server = _FORK.Process(target=_cli, args=(
        ["--home", str(alpha_home), "serve", "--json", "--listen", "127.0.0.1", "--port", "0"],
        serve_w, serve_w), daemon=True)
    server.start()
    os.close(serve_w)
    lines = os.fdopen(serve_out, "r")
    try:
        port = json.loads(lines.readline())["port"]
        ping_err, ping_w = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        pinger = _FORK.Process(target=_cli, args=(
            ["--home", str(beta_home), "ping", f"127.0.0.1:{port}"], devnull, ping_w),
            daemon=True)
        pinger.start()
        os.close(ping_w)
        os.close(devnull)
        with os.fdopen(ping_err, "r") as errors:
            ping_stderr = errors.read()
        pinger.join(WAIT)
        # serve answers and logs before ping can end: its lines are written by now.
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        server.join(WAIT)
        served = lines.read()
    finally:
        lines.close()
        if server.is_alive():
            server.kill()
    return pinger.exitcode or 0, ping_stderr, served


def settle(alpha_home: Path, beta_home: Path, views: Callable[[], tuple[str, str]]) -> str:
    """Settle an unconfirmed run by trusted contact, each way round if need be.

    Args:
        alpha_home: the offerer's home.
        beta_home: the joiner's home.
        views: reads (alpha's view of beta, beta's view of alpha) from the stores.

    Returns:
        ``healed (both confirmed)``, ``told to pair again``, or ``not settled: …``.
    """
    told = False
    after = views()
    for server, client in ((alpha_home, beta_home), (beta_home, alpha_home)):
        status, ping_err, served = heal(server, client)
        after = views()
        if after == ("confirmed", "confirmed"):
            return "healed (both confirmed)"
        if status != 0 and ("pair again" in ping_err or "pair again" in served):
            told = True
    return "told to pair again" if told else f"not settled: {after}"
