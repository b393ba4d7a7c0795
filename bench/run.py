"""Every figure of ``scripts/bench`` by name, so that one can be re-run alone
(``scripts/bench --only tunnel_fresh``, or by a key it reports: ``--only cli_help_ms``).

Each group is a function ``(options) -> dict``; its keys go into the one JSON object.
The figure modules import :mod:`bench.stats` and never each other; this module is the
only one that knows them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.stats import Figure


@dataclass(frozen=True)
class Options:
    quick: bool = False
    peers: int = 100_000


@dataclass(frozen=True)
class Group:
    """A named set of figures, and the headline keys it reports."""

    name: str
    keys: tuple[str, ...]
    run: Callable[[Options], Figure]


def _pairing(options: Options) -> Figure:
    from bench.figures import (
        Devices,
        cpace_ms_per_side,
        hmac_guesses_per_second,
        pair_vs_tls,
        round_trips,
    )

    devices = Devices()
    try:
        scale = 3 if options.quick else 1
        cost = cpace_ms_per_side(devices, 200 // scale)
        pair = pair_vs_tls(devices, 30 // scale)
        rtts = round_trips(devices, repeats=max(2, 5 // scale))
        guesses = hmac_guesses_per_second(devices)
    finally:
        devices.close()
    return {
        "cpace_ms_per_side": cost,
        "pair_vs_tls_ratio": pair["ratio"],
        "pair_vs_tls": pair,
        "joiner_rtts": {m: rtts[m]["joiner_rtts"]["median"] for m in ("cpace", "hmac")},
        "offerer_rtts": {m: rtts[m]["offerer_rtts"]["median"] for m in ("cpace", "hmac")},
        "round_trips": rtts,
        "hmac_guesses_per_s": guesses["guesses_per_s"],
        "hmac_guessing": guesses,
    }


def _cli(options: Options) -> Figure:
    from bench.cli_start import cli_start

    return cli_start(quick=options.quick)


def _load(options: Options) -> Figure:
    from bench.load import pair_under_load

    return pair_under_load(quick=options.quick)


def _store_scale(options: Options) -> Figure:
    from bench.store_scale import store_scale

    return store_scale(quick=options.quick)


def _fleet(options: Options) -> Figure:
    from bench.fleet import fleet

    return fleet(quick=options.quick, peers=options.peers)


def _log(options: Options) -> Figure:
    from bench.log_growth import log_growth

    return log_growth(1000 if options.quick else 5000)


def _flood(options: Options) -> Figure:
    from bench.flood import handshake_flood

    return handshake_flood(quick=options.quick)


def _tunnel(which: str) -> Callable[[Options], Figure]:
    def run(options: Options) -> Figure:
        from bench import tunnel

        figure: Callable[[bool], Figure] = getattr(tunnel, which)
        return figure(options.quick)

    return run


def _relay_pairing(options: Options) -> Figure:
    from bench.relayed import relay_pairing

    return relay_pairing(quick=options.quick)


def _relay_tunnel(options: Options) -> Figure:
    from bench.relayed import relay_tunnel

    return relay_tunnel(quick=options.quick)


GROUPS: tuple[Group, ...] = (
    Group("cli_start", ("cli_version_ms", "cli_help_ms", "cli_show_ms"), _cli),
    Group("pairing", ("cpace_ms_per_side", "pair_vs_tls_ratio", "joiner_rtts",
                      "offerer_rtts", "hmac_guesses_per_s"), _pairing),
    Group("load", ("pair_idle_ms", "pair_under_load_ms", "pair_under_flood_ms",
                   "offerer_rss_mb_under_load"), _load),
    Group("store_scale", ("store_10k_vs_10_ratio",), _store_scale),
    Group("fleet", ("trusted_context_build_ms", "unpair_effective_ms",
                    "handshake_100k_vs_10_ratio", "serve_rss_mb",
                    "pair_commit_100k_vs_10_ratio", "join_into_hub_100k_vs_10_ratio",
                    "verify_peers_100k_ms", "verify_peers_vs_read_all_ratio"), _fleet),
    Group("tunnel_throughput", ("tunnel_throughput_1_vs_stunnel",
                                "tunnel_throughput_16_vs_stunnel"),
          _tunnel("tunnel_throughput")),
    Group("tunnel_fresh", ("tunnel_fresh_seq_vs_stunnel", "tunnel_fresh_20x20_vs_stunnel",
                           "tunnel_fresh_seq_floor_vs_stunnel",
                           "tunnel_fresh_20x20_floor_vs_stunnel"),
          _tunnel("tunnel_fresh")),
    Group("tunnel_rss", ("tunnel_rss_vs_stunnel", "tunnel_rss_mb_500_conns"),
          _tunnel("tunnel_rss")),
    Group("tunnel_cut", ("tunnel_unpair_cut_ms",), _tunnel("tunnel_cut")),
    Group("tunnel_fds", ("tunnel_fds_leaked_10000_conns",), _tunnel("tunnel_fds")),
    Group("handshake_flood", ("flood_tunnel_ms", "flood_ping_ms"), _flood),
    Group("log_growth", ("log_rows_per_5000_refused", "log_bytes_per_5000_refused"), _log),
    Group("relay_pairing", ("relay_pair_extra_rtts",), _relay_pairing),
    Group("relay_tunnel", ("relay_tunnel_throughput_vs_direct",), _relay_tunnel),
)


def select(names: list[str] | None) -> list[Group]:
    """The groups named (by group name, a group-name prefix such as ``tunnel``, or a
    key a group reports), in their order; all of them for None.

    Raises:
        ValueError: a name matches nothing.
    """
    if not names:
        return list(GROUPS)
    chosen: set[str] = set()
    for name in names:
        found = {g.name for g in GROUPS
                 if name in (g.name, *g.keys) or g.name.startswith(f"{name}_")}
        if not found:
            raise ValueError(f"no figure named {name!r} (see --list)")
        chosen |= found
    return [g for g in GROUPS if g.name in chosen]


def run(groups: list[Group], options: Options) -> Figure:
    """The figures of ``groups``, as one JSON-ready dict."""
    from bench.figures import environment

    figures: Figure = {"environment": environment()}
    for group in groups:
        figures.update(group.run(options))
    return figures


__all__ = ["GROUPS", "Group", "Options", "run", "select"]
