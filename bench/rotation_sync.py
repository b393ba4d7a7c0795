"""One pass of ``certpair sync --all`` telling a key rotation to N peers (issue 15).

N peer homes (identity + store each, all trusting one rotating device) are served by
one process here, one loopback port per peer, each answering a ``sync`` line with the
real driver; the rotating device is a real ``certpair`` process. Reported: the pass
with a pending rotation (every peer verifies two signatures, stores the successor and
acknowledges) against the baseline of the same pass with nothing to tell, in the same
run. Usage::

    .venv/bin/python -m bench.rotation_sync [N]      # default 1000
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from certpair.identity import create_identity
from certpair.rotation.exchange import run_sync
from certpair.store import open_store
from certpair.trusted import peer_of, server_context

CLI = [sys.executable, "-m", "certpair"]


def _serve(listeners: dict[int, tuple[socket.socket, Path]], stop: threading.Event) -> None:
    contexts: dict[Path, ssl.SSLContext] = {}
    selector = selectors.DefaultSelector()
    for sock, home in listeners.values():
        selector.register(sock, selectors.EVENT_READ, home)

    def handle(conn: socket.socket, home: Path) -> None:
        context = contexts.get(home) or contexts.setdefault(home, server_context(home))
        with conn, context.wrap_socket(conn, server_side=True) as tls, \
                open_store(home) as store, tls.makefile("rb") as reader:
            peer = peer_of(tls, store)
            assert reader.readline() == b"sync\n"
            run_sync(reader.read1, tls.sendall, peer=peer,
                     peer_cert=tls.getpeercert(binary_form=True) or b"", home=home,
                     store=store, remote="bench", initiator=False)

    while not stop.is_set():
        for key, _ in selector.select(0.2):
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            conn, _ = listener.accept()
            conn.settimeout(30)
            threading.Thread(target=handle, args=(conn, key.data), daemon=True).start()


def _sync_all(home: Path) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    result = subprocess.run([*CLI, "--home", str(home), "sync", "--all", "--json"],
                            capture_output=True, text=True, check=True, timeout=900)
    wall = time.perf_counter() - start
    summary: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return wall, summary


def main(count: int = 1000) -> dict[str, object]:
    """Set up ``count`` peers, time the baseline pass and the rotation pass."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * count + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rotating = create_identity(root / "rotating", "rotating")
        listeners: dict[int, tuple[socket.socket, Path]] = {}
        started = time.perf_counter()
        with open_store(root / "rotating") as mine:
            for i in range(count):
                home = root / f"peer{i}"
                peer = create_identity(home, f"peer{i}")
                with open_store(home) as theirs:
                    theirs.commit_pairing(name="rotating", cert_der=rotating.cert_der,
                                          mode="cpace", role="offerer", remote="bench")
                mine.commit_pairing(name=f"peer{i}", cert_der=peer.cert_der, mode="cpace",
                                    role="joiner", remote="bench")
                sock = socket.create_server(("127.0.0.1", 0), backlog=64)
                port = sock.getsockname()[1]
                listeners[port] = (sock, home)
                mine.remember_address(peer.fingerprint, f"127.0.0.1:{port}")
        setup = time.perf_counter() - started
        stop = threading.Event()
        server = threading.Thread(target=_serve, args=(listeners, stop), daemon=True)
        server.start()
        try:
            baseline, base_summary = _sync_all(root / "rotating")
            subprocess.run([*CLI, "--home", str(root / "rotating"), "rotate"], check=True,
                           capture_output=True, timeout=60)
            rotation, summary = _sync_all(root / "rotating")
            status = subprocess.run(
                [*CLI, "--home", str(root / "rotating"), "rotate", "--status", "--json"],
                check=True, capture_output=True, text=True, timeout=120)
            learned = json.loads(status.stdout.splitlines()[0])
        finally:
            stop.set()
            server.join(5)
            for sock, _ in listeners.values():
                sock.close()
    return {"peers": count, "setup_s": round(setup, 1),
            "baseline_sync_all_s": round(baseline, 2), "baseline": base_summary,
            "rotation_sync_all_s": round(rotation, 2), "rotation": summary,
            "ratio_to_baseline": round(rotation / baseline, 2),
            "learned": learned["learned"], "missing": learned["missing"]}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
