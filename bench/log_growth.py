"""Audit-log growth under a flood of refused connections (issue 10 §5).

An unpaired device makes 5,000 real mutual-TLS connections over loopback to a real
``certpair serve`` process; the figure is how many audit-log rows and how many bytes
of store file (checkpointed, before and after) those refusals cost. ``serve --json``
prints each refusal after logging it, so all of them are counted when it is stopped.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from certpair.identity import create_identity
from certpair.store import open_store
from certpair.trusted import client_context

Figure = dict[str, object]
FLOOD = 5000


def _store_bytes(home: Path) -> int:
    db = sqlite3.connect(home / "trust.db")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return sum(p.stat().st_size for p in home.glob("trust.db*"))


def log_growth(flood: int = FLOOD) -> Figure:
    """Rows and bytes the log grows by for ``flood`` refused connections."""
    with tempfile.TemporaryDirectory(prefix="certpair-bench-log-") as tmp:
        root = Path(tmp)
        alpha = create_identity(root / "alpha", "alpha")
        create_identity(root / "mallory", "mallory")
        with open_store(root / "mallory") as store:
            store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                 role="joiner", remote="bench")
        with open_store(root / "alpha") as store:
            rows_before = len(store.events())
        bytes_before = _store_bytes(root / "alpha")
        serve = subprocess.Popen(
            [sys.executable, "-m", "certpair", "--home", str(root / "alpha"), "serve",
             "--json", "--listen", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert serve.stdout is not None
        try:
            port = int(json.loads(serve.stdout.readline())["port"])
            # Read while the flood runs: serve drops (and counts) lines nobody reads.
            lines: queue.Queue[str] = queue.Queue()
            out = serve.stdout

            def pump() -> None:
                for line in out:
                    lines.put(line)
                lines.put("")

            threading.Thread(target=pump, daemon=True).start()
            context = client_context(root / "mallory")
            started = time.perf_counter()
            for _ in range(flood):
                with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                        context.wrap_socket(raw, server_hostname="certpair") as tls, \
                        contextlib.suppress(ssl.SSLError, ConnectionError):
                    tls.recv(1)
            seen = 0
            while seen < flood:
                line = lines.get(timeout=60)
                if not line:
                    raise RuntimeError("serve ended during the flood")
                event = json.loads(line)  # a dropped line's refusal was logged too
                seen += event.get("outcome") == "refused" or event.get("lines", 0)
            elapsed = time.perf_counter() - started
        finally:
            serve.terminate()
            serve.communicate(timeout=30)
        with open_store(root / "alpha") as store:
            events = store.events()
        counted = sum(e.count for e in events if e.outcome == "refused")
        grown = _store_bytes(root / "alpha") - bytes_before
    return {
        "log_rows_per_5000_refused": round((len(events) - rows_before) * FLOOD / flood),
        "log_bytes_per_5000_refused": round(grown * FLOOD / flood),
        "log_growth": {"connections": flood, "refusals_counted": counted,
                       "rows": len(events) - rows_before, "store_bytes_grown": grown,
                       "seconds": round(elapsed, 2),
                       "one_row_per_refusal_would_be_rows": flood},
    }


__all__ = ["log_growth"]
