"""Attack tests: frame-level against the sans-I/O state machines, TLS-level against the drivers."""
