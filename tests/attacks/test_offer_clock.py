"""hmac mode: the key's length follows its lifetime (the offline window), by `certpair
advise`'s formula; and an offer's expiry runs on a monotonic clock, so that a wall-clock
step neither kills a live secret nor revives a dead one (issue 10 §4)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

from certpair.advice import DEFAULT_RISK, advise
from certpair.codes import Mode
from tests.cliutil import Offerer, Proc, peers, run


def test_hmac_key_too_short_for_its_ttl_is_refused(homes: tuple[Path, Path]) -> None:
    a, _ = homes
    needed = math.ceil(advise(mode=Mode.HMAC, risk=DEFAULT_RISK, ttl=86400).bits)
    assert needed > 64  # a day-long key needs more than the 64-bit floor
    result = run(a, "pair", "--mode", "hmac", "--ttl", "86400", "--bits",
                 "64", "--timeout", "1", "--port", "0", "--no-advertise", timeout=30)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"at least {needed} bits" in result.stderr
    ok = run(a, "pair", "--mode", "hmac", "--ttl", "86400", "--bits",
             str(needed), "--timeout", "1", "--port", "0", "--no-advertise", timeout=30)
    assert ok.returncode == 3, ok.stderr  # accepted, and expired unused


def _stepped_clock(tmp_path: Path) -> tuple[list[str], Path]:
    """A prefix whose Python's wall clock (time.time) is shifted by the seconds in a file."""
    shim = tmp_path / "shim"
    shim.mkdir()
    step = tmp_path / "step"
    step.write_text("0")
    (shim / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import time
        _real = time.time
        def _stepped():
            with open({str(step)!r}) as f:
                return _real() + float(f.read() or 0)
        time.time = _stepped
    """))
    paths = [str(shim), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return ["env", "PYTHONPATH=" + os.pathsep.join(paths)], step


def test_wall_clock_step_does_not_expire_a_live_offer(
    tmp_path: Path, homes: tuple[Path, Path], offerers: list[Proc]
) -> None:
    a, b = homes
    prefix, step = _stepped_clock(tmp_path)
    offerer = Offerer(a, "--ttl", "300", advertise=False, prefix=prefix)
    offerers.append(offerer)
    step.write_text("86400")  # the offerer's wall clock jumps a day ahead
    result = run(b, "join", offerer.address, offerer.code)
    assert result.returncode == 0, result.stderr
    assert len(peers(b)) == 1
    assert offerer.finish()[0] == 0
