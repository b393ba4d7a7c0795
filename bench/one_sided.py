"""The one-sided pairing experiment of issue 11: kill either side, or cut the
connection, at random moments, and count how each run ended.

Each run pairs two fresh homes (the same two identities, empty stores). What a run
leaves is each side's view of the other — ``none``, ``unconfirmed`` or ``confirmed``
— and what each living side said. A **silent one-sided** outcome is one side holding
the other as confirmed while the other holds nothing: nobody was told, and nothing
will heal it. The protocol must never produce one (docs/PROTOCOL.md section 6a).

Two ways to break a run, both seeded:

* :func:`cut_run` — both drivers in this process over real loopback TLS, through a
  relay that forwards whole TLS records and closes both connections instead of
  forwarding record number ``cut`` in one direction (a lost last message).
* :func:`kill_run` — each side in its own forked process (a fresh event loop and
  store), SIGKILLed at a random moment of the pairing, optionally through a relay
  that also cuts at a random record (a lossy network and a crash at once).

Unconfirmed outcomes can then be settled by :func:`heal`: the real ``serve`` and
``ping`` commands between the two homes (in forked processes).

Runs against an older certpair too (no ``confirmed`` column: every row counts as
confirmed), which is how the "before" counts were taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.heal import settle
from bench.relay import CuttingRelay
from certpair.codes import Mode, parse_secret
from certpair.identity import Identity, create_identity, load_identity
from certpair.net import Listening, OfferEvent, run_join, run_offer
from certpair.store import open_store

__all__ = [
    "CuttingRelay",
    "Outcome",
    "Pair",
    "cut_run",
    "experiment",
    "kill_run",
    "make_pair",
]

_FORK = multiprocessing.get_context("fork")
WAIT = 20.0


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two identities (alpha offers, beta joins) to copy into fresh homes per run."""

    root: Path
    alpha: Identity
    beta: Identity

    def homes(self, run: int) -> tuple[Path, Path]:
        """Fresh homes for run ``run``: the identities, no store."""
        made = []
        for name in ("alpha", "beta"):
            home = self.root / f"run{run}" / name
            shutil.copytree(self.root / name / "identity", home / "identity")
            made.append(home)
        return made[0], made[1]


def make_pair(root: Path) -> Pair:
    """Create the two identities under ``root``."""
    return Pair(root=root, alpha=create_identity(root / "alpha", "alpha"),
                beta=create_identity(root / "beta", "beta"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one run left: each side's view of the other, and what each said."""

    alpha: str  # the offerer's view of beta: none / unconfirmed / confirmed
    beta: str  # the joiner's view of alpha
    offerer_said: str
    joiner_said: str
    how: str = ""

    @property
    def silent_one_sided(self) -> bool:
        """One side trusts the other as confirmed, the other holds nothing."""
        return {self.alpha, self.beta} == {"confirmed", "none"}

    @property
    def kind(self) -> str:
        """A category for the counts."""
        views = {self.alpha, self.beta}
        if self.silent_one_sided:
            return "silent one-sided"
        if views == {"confirmed"}:
            return "paired both"
        if views == {"none"}:
            return "neither"
        if "none" in views:
            return "unconfirmed, other side none (pair again)"
        return "unconfirmed, both stored (heals)"

    @property
    def unreported(self) -> bool:
        """A living side holds an unconfirmed peer but did not say so."""
        return any(view == "unconfirmed" and said not in ("unconfirmed", "killed")
                   for view, said in ((self.alpha, self.offerer_said),
                                      (self.beta, self.joiner_said)))


def view(home: Path, fingerprint: str) -> str:
    """How ``home`` holds the peer with ``fingerprint``."""
    if not (home / "trust.db").exists():
        return "none"
    with open_store(home) as store:
        peer = store.peer(fingerprint)
    if peer is None:
        return "none"
    return "confirmed" if getattr(peer, "confirmed", True) else "unconfirmed"


def said(error: BaseException | None) -> str:
    """What a side's run said: paired, unconfirmed, or the error's class."""
    if error is None:
        return "paired"
    if type(error).__name__ == "PairingUnconfirmed":
        return "unconfirmed"
    return f"failed:{type(error).__name__}"


async def cut_run(pair: Pair, run: int, mode: Mode, direction: str, cut: int | None
                  ) -> Outcome:
    """Pair through a :class:`CuttingRelay`, both sides in this event loop."""
    alpha_home, beta_home = pair.homes(run)
    with open_store(alpha_home) as alpha_store, open_store(beta_home) as beta_store:
        listening: asyncio.Queue[Listening] = asyncio.Queue()

        def on_event(event: OfferEvent) -> None:
            if isinstance(event, Listening):
                listening.put_nowait(event)

        offer = asyncio.ensure_future(run_offer(
            identity=pair.alpha, store=alpha_store, mode=mode, host="127.0.0.1", port=0,
            once=True, timeout=WAIT, on_event=on_event))
        shown = await asyncio.wait_for(listening.get(), WAIT)
        relay = await CuttingRelay(shown.port, direction, cut).start()
        try:
            joined: BaseException | None = None
            try:
                await run_join(identity=pair.beta, store=beta_store, host="127.0.0.1",
                               port=relay.port, secret=parse_secret(shown.code), timeout=WAIT)
            except Exception as exc:  # the outcome is what is counted
                joined = exc
            offered = await _end_offer(offer)
        finally:
            relay.close()
            offer.cancel()
    return Outcome(alpha=view(alpha_home, pair.beta.fingerprint),
                   beta=view(beta_home, pair.alpha.fingerprint), offerer_said=offered,
                   joiner_said=said(joined), how=f"cut {direction} {cut}")


# ------------------------------------------------------------------ forked processes


def _child(target: Callable[[], str], pipe: Connection) -> None:
    """Run ``target`` and send what it said; never returns (os._exit)."""
    try:
        pipe.send(("said", target()))
    except BaseException as exc:  # reported to the parent
        pipe.send(("said", f"failed:{type(exc).__name__}"))
    finally:
        pipe.close()
        os._exit(0)


async def _end_offer(offer: asyncio.Future[Any]) -> str:
    """The joiner has ended: let the offerer's open conversations conclude, then end
    the offer (still open if no proof ever reached it) and say how it ended."""
    if not offer.done():
        # The joiner's end closed its connection; its conversation concludes within a
        # few turns of the loop (polled: this is the harness, not the product).
        while any(getattr(t.get_coro(), "__qualname__", "") == "_Offerer.handle"
                  for t in asyncio.all_tasks()):
            await asyncio.sleep(0.005)
        await asyncio.wait({offer}, timeout=0.05)
        if not offer.done():
            offer.cancel()
            with contextlib.suppress(BaseException):
                await offer
            return "stopped"
    error = offer.exception()
    return said(error)


async def _offer_until_stopped(home: Path, mode: Mode, pipe: Connection) -> str:
    """Offer; when the parent says ``stop`` (the joiner has ended), let every open
    conversation conclude, then end with what the offer said."""
    identity = load_identity(home)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)

    def on_event(event: OfferEvent) -> None:
        if isinstance(event, Listening):
            pipe.send(("listening", (event.port, event.code)))

    with open_store(home) as store:
        offer = asyncio.ensure_future(run_offer(
            identity=identity, store=store, mode=mode, host="127.0.0.1", port=0, once=True,
            timeout=WAIT, on_event=on_event))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({offer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        return await _end_offer(offer)


def _offerer(home: Path, mode: Mode, pipe: Connection) -> None:
    _child(lambda: asyncio.run(_offer_until_stopped(home, mode, pipe)), pipe)


def _joiner(home: Path, port: int, code: str, pipe: Connection) -> None:
    def target() -> str:
        identity = load_identity(home)
        with open_store(home) as store:
            try:
                asyncio.run(run_join(identity=identity, store=store, host="127.0.0.1",
                                     port=port, secret=parse_secret(code), timeout=WAIT / 2))
            except Exception as exc:
                return said(exc)
            return "paired"

    _child(target, pipe)


def _relay(port: int, direction: str, cut: int | None, pipe: Connection) -> None:
    async def serve() -> None:
        relay = await CuttingRelay(port, direction, cut).start()
        pipe.send(("listening", (relay.port, "")))
        await asyncio.sleep(WAIT)  # until killed by the parent

    with contextlib.suppress(BaseException):
        asyncio.run(serve())
    os._exit(0)


class _Proc:
    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.parent, child = _FORK.Pipe()
        self.proc = _FORK.Process(target=target, args=(*args, child), daemon=True)
        self.proc.start()
        child.close()
        self.said = "killed"

    def expect(self, kind: str) -> Any:
        if not self.parent.poll(WAIT):
            raise TimeoutError(f"no {kind} from the child")
        got, value = self.parent.recv()
        assert got == kind, (got, value)
        return value

    def finish(self, timeout: float = WAIT) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.kill()
        with contextlib.suppress(EOFError, OSError):
            while self.parent.poll(0):
                got, value = self.parent.recv()
                if got == "said":
                    self.said = value
        self.parent.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, TypeError):
            assert self.proc.pid is not None
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(WAIT)


def kill_run(pair: Pair, run: int, mode: Mode, victim: str, delay: float,
             lossy: tuple[str, int] | None) -> Outcome:
    """One forked pairing; ``victim`` (offerer/joiner/none) is SIGKILLed ``delay``
    seconds after the joiner starts; ``lossy`` = (direction, record) to cut there."""
    alpha_home, beta_home = pair.homes(run)
    offerer = _Proc(_offerer, alpha_home, mode)
    port, code = offerer.expect("listening")
    relay = None
    if lossy is not None:
        relay = _Proc(_relay, port, lossy[0], lossy[1])
        port = relay.expect("listening")[0]
    joiner = _Proc(_joiner, beta_home, port, code)
    # The random moment is the experiment's variable, not a synchronisation.
    time.sleep(delay)
    if victim == "offerer":
        offerer.kill()
    elif victim == "joiner":
        joiner.kill()
    joiner.finish()
    with contextlib.suppress(OSError):
        offerer.parent.send(("stop", None))
    offerer.finish()
    if relay is not None:
        relay.kill()
        relay.finish(1)
    cut = f", cut {lossy[0]} {lossy[1]}" if lossy else ""
    return Outcome(alpha=view(alpha_home, pair.beta.fingerprint),
                   beta=view(beta_home, pair.alpha.fingerprint), offerer_said=offerer.said,
                   joiner_said=joiner.said, how=f"kill {victim} at {delay * 1000:.0f} ms{cut}")


def horizon(pair: Pair, mode: Mode, repeats: int = 3) -> float:
    """Median seconds from the joiner's start to both sides done (forked, no kill)."""
    times = []
    for number in range(repeats):
        start = time.perf_counter()
        outcome = kill_run(pair, 10_000 + number + (100 if mode is Mode.HMAC else 0), mode,
                           "none", 0.0, None)
        times.append(time.perf_counter() - start)
        assert outcome.kind == "paired both", outcome
    return statistics.median(times)


# ------------------------------------------------------------------ the experiment


def experiment(root: Path, *, runs: int, seed: int, lossy_share: float = 0.3,
               heal_limit: int | None = None,
               report: Callable[[Outcome], None] = lambda outcome: None) -> dict[str, Any]:
    """``runs`` forked pairings, each side killed at a random moment (a share of them
    through a relay that also cuts at a random record), then healing of unconfirmed
    outcomes (at most ``heal_limit``). Returns the counts."""
    rng = random.Random(seed)
    pair = make_pair(root)
    horizons = {mode: horizon(pair, mode) for mode in Mode}
    kinds: Counter[str] = Counter()
    healing: Counter[str] = Counter()
    silent: list[str] = []
    unreported: list[str] = []
    for run in range(runs):
        mode = rng.choice(list(Mode))
        victim = rng.choice(["offerer", "joiner"])
        lossy = ((rng.choice(["up", "down"]), rng.randrange(2, 9))
                 if rng.random() < lossy_share else None)
        # Half the kills anywhere in the run, half in its last 40 % (where the commits
        # and the last messages are).
        low = 0.0 if rng.random() < 0.5 else 0.6
        delay = rng.uniform(low * horizons[mode], horizons[mode])
        outcome = kill_run(pair, run, mode, victim, delay, lossy)
        report(outcome)
        kinds[outcome.kind] += 1
        if outcome.silent_one_sided:
            silent.append(outcome.how)
        if outcome.unreported:
            unreported.append(outcome.how)
        if "unconfirmed" in outcome.kind and (heal_limit is None or
                                              sum(healing.values()) < heal_limit):
            alpha_home, beta_home = root / f"run{run}" / "alpha", root / f"run{run}" / "beta"

            def views(a: Path = alpha_home, b: Path = beta_home) -> tuple[str, str]:
                return view(a, pair.beta.fingerprint), view(b, pair.alpha.fingerprint)

            healing[settle(alpha_home, beta_home, views)] += 1
        shutil.rmtree(root / f"run{run}", ignore_errors=True)
    return {"runs": runs, "seed": seed, "horizon_ms": {m.value: round(h * 1000, 1)
                                                       for m, h in horizons.items()},
            "kinds": dict(kinds), "healing": dict(healing), "silent_one_sided": silent,
            "unreported_unconfirmed": unreported}


def main() -> None:
    """``python -m bench.one_sided [RUNS] [SEED]``: the experiment's counts as JSON."""
    import tempfile

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="certpair-one-sided-") as root:
        counts = experiment(Path(root), runs=runs, seed=seed)
    counts["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
