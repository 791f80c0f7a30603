"""Run many cases in-process under a guard: one forked child runs them in turn, each with a SIGALRM timeout, the
whole child under an address-space cap (RLIMIT_AS = its size at start + `mem_bytes`).

A case ends one of these ways:
- "ok": the function returned (its return value, small and picklable, comes back);
- "clean": it raised a ZeropointError (a message for the user; the text comes back);
- "traceback": it raised anything else (a bug: the traceback comes back);
- "hang": it ran past `timeout_s`; "memory": it hit the cap (MemoryError); "crash": the child died (signal).
Only "traceback", "hang", "memory" and "crash" are failures. A hang the alarm cannot interrupt (inside C) is caught
by the parent's watchdog, which kills the child and starts a new one at the next case.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

BAD = ("traceback", "hang", "memory", "crash")


class CaseTimeout(BaseException):   # BaseException: code under test that catches Exception cannot swallow it
    pass


@dataclass
class Outcome:
    index: int
    kind: str
    detail: Any
    seconds: float

    @property
    def bad(self) -> bool:
        return self.kind in BAD


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(conn, fn: Callable, cases: Sequence, start: int, timeout_s: float, mem_bytes: int) -> None:
    from zeropoint.errors import ZeropointError
    limit = _vm_bytes() + mem_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def alarm(signum, frame):
        raise CaseTimeout()
    signal.signal(signal.SIGALRM, alarm)
    for i in range(start, len(cases)):
        conn.send(("start", i))
        t0 = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                kind, detail = "ok", fn(cases[i])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CaseTimeout:
            kind, detail = "hang", f"still running after {timeout_s}s"
        except MemoryError:
            kind, detail = "memory", f"over the {mem_bytes >> 20} MiB cap"
        except ZeropointError as e:
            kind, detail = "clean", f"{type(e).__name__}: {e}"[:2000]
        except BaseException as e:   # noqa: BLE001 - every other escape is what the harness exists to find
            kind, detail = "traceback", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
        conn.send(("done", i, kind, detail, time.perf_counter() - t0))
    conn.send(("end",))


def run_guarded(fn: Callable[[Any], Any], cases: Sequence, *, timeout_s: float = 10.0, mem_bytes: int = 1 << 30,
                watchdog_s: float | None = None) -> list[Outcome]:
    """Outcomes in case order. `fn` and `cases` reach the child by fork (nothing is pickled on the way in)."""
    ctx = mp.get_context("fork")
    out: list[Outcome] = []
    watchdog_s = watchdog_s or timeout_s + 20
    start = 0
    while start < len(cases):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(send, fn, cases, start, timeout_s, mem_bytes), daemon=True)
        p.start()
        send.close()
        current, last, t0 = None, start - 1, time.monotonic()
        while True:
            if recv.poll(1.0):
                try:
                    msg = recv.recv()
                except EOFError:
                    msg = None
            else:
                msg = None
                if p.is_alive() and not (current is not None and time.monotonic() - t0 > watchdog_s):
                    continue
            if msg is None:   # the child died, or a case outran the watchdog: record it, go on after it
                if p.is_alive():
                    p.kill()
                p.join()
                i = current if current is not None else last + 1
                kind = "hang" if p.exitcode == -signal.SIGKILL else "crash"
                out.append(Outcome(i, kind, f"child ended with {p.exitcode}", time.monotonic() - t0))
                start = i + 1
                break
            if msg[0] == "start":
                current, t0 = msg[1], time.monotonic()
            elif msg[0] == "done":
                out.append(Outcome(msg[1], msg[2], msg[3], msg[4]))
                current, last = None, msg[1]
            else:
                p.join()
                start = len(cases)
                break
        recv.close()
    return out


def failures(outcomes: list[Outcome], labels: Sequence[str] | None = None) -> list[str]:
    return [f"case {o.index}{f' ({labels[o.index]})' if labels else ''}: {o.kind}: {str(o.detail)[:600]}"
            for o in outcomes if o.bad]
