"""Run by scripts/demo: pair two fresh devices in two processes and show their stores."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = [sys.executable, "-m", "certpair"]


def certpair(home: Path, *args: str) -> str:
    print(f"$ certpair --home {home} {' '.join(args)}", flush=True)
    result = subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True,
                            check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode:
        sys.exit(result.returncode)
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["cpace", "hmac"], default="cpace")
    mode = parser.parse_args().mode
    with tempfile.TemporaryDirectory(prefix="certpair-demo-") as tmp:
        a, b = Path(tmp) / "alpha", Path(tmp) / "beta"
        certpair(a, "init", "--name", "alpha")
        certpair(b, "init", "--name", "beta")
        print(f"$ certpair --home {a} pair --mode {mode} --listen 127.0.0.1 --port 0 --json &")
        offerer = subprocess.Popen(
            [*CLI, "--home", str(a), "pair", "--mode", mode, "--listen", "127.0.0.1",
             "--port", "0", "--json"],
            stdout=subprocess.PIPE, text=True,
        )
        assert offerer.stdout is not None
        line = offerer.stdout.readline()
        print(line, end="", flush=True)
        listening = json.loads(line)
        certpair(b, "join", f"127.0.0.1:{listening['port']}", listening["code"])
        rest, _ = offerer.communicate(timeout=60)
        print(rest, end="")
        if offerer.returncode:
            sys.exit(offerer.returncode)
        print("\nalpha's trust store:")
        certpair(a, "peers")
        print("\nbeta's trust store:")
        certpair(b, "peers")


if __name__ == "__main__":
    main()
