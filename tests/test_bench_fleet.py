"""The fleet benchmark (bench/fleet.py) runs end to end at a small size, so CI keeps it
working; its figures are reported by ``scripts/bench``, never asserted here."""

from __future__ import annotations

from bench.fleet import fleet


def test_the_fleet_benchmark_runs_at_a_small_size_and_reports_every_figure() -> None:
    figures = fleet(peers=40, repeats=2, clients=10)
    for name in ("trusted_context_build_ms", "unpair_effective_ms",
                 "handshake_100k_vs_10_ratio", "serve_rss_mb",
                 "pair_commit_100k_vs_10_ratio", "join_into_hub_100k_vs_10_ratio",
                 "verify_peers_100k_ms", "verify_peers_vs_read_all_ratio"):
        assert figures[name] > 0, name
    assert figures["fleet"]["peers"] == 40
    assert figures["fleet"]["client_peers"] == 10
