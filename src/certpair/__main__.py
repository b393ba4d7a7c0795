"""``python -m certpair``."""

from __future__ import annotations

from certpair.cli.main import main

main()
