"""certpair's benchmarks (``scripts/bench``) and the delay proxy they share with tests."""
