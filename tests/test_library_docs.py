"""docs/LIBRARY.md is a program: every ``python`` block runs, in order, in one process.

The walk-through (init → offer/join → serve/connect → HTTP clients and servers →
refusals → unpair → rotate) is run as a user would paste it, over real loopback TLS,
and what it prints is checked, so the page cannot drift from the API.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_DOC = Path(__file__).resolve().parent.parent / "docs" / "LIBRARY.md"
_BLOCKS = re.findall(r"^```python\n(.*?)^```", _DOC.read_text(encoding="utf-8"),
                     re.MULTILINE | re.DOTALL)

_RUNNER = """
import sys
blocks = sys.stdin.read().split("\\n#--- next block ---\\n")
namespace = {"__name__": "__main__"}
for number, block in enumerate(blocks, 1):
    exec(compile(block, f"docs/LIBRARY.md block {number}", "exec"), namespace)
"""


def test_library_md_has_a_block_for_each_step_of_an_apps_life() -> None:
    text = "\n".join(_BLOCKS)
    for call in ("create_identity", "run_offer", "run_join", "start_server",
                 "open_connection", "peer_of", "why_refused", "remove_peer",
                 "start_rotation", "finish_rotation"):
        assert f"certpair.{call}" in text or f".{call}(" in text, call


def test_every_code_block_of_library_md_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER], input="\n#--- next block ---\n".join(_BLOCKS),
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "beta trusts alpha; alpha trusts beta" in out
    assert "alpha answered: hello beta, you said hi" in out
    assert out.count("'hello': 'beta'") + out.count('"hello": "beta"') == 5, out
    assert "refused this device: it is not paired there" in out
    assert "alpha no longer trusts beta" in out
    assert "not learned the new certificate" in out
    assert "Traceback" not in done.stderr, done.stderr
