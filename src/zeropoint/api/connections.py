"""Connection limits for `zpctl serve`: a header timeout, a body idle timeout and a per-address connection cap.

uvicorn (0.54, h11) closes idle keep-alive connections but puts no time limit on a request head that never
finishes: 1,100 sockets that each sent half a header held every connection slot (`limit_concurrency`) and
`/healthz` answered 503 for as long as they stayed. `guarded_h11(...)` is uvicorn's own h11 protocol with three
additions, all on the event loop (no threads, no polling):
- the request head (request line and headers) must be complete within `header_timeout_s` of the connection
  opening, or of the first byte of the next request on a kept-alive connection; otherwise 408 and close;
- while a request body is arriving, `body_idle_s` may pass between reads at most; otherwise 408 and close;
- one client address may hold at most `max_per_ip` connections; past that a new one gets 503 and is closed at
  once, so one address cannot take the slots other clients (and health probes) need.
Once a request has arrived in full, its response may take as long as it takes (server-sent event streams).
"""
from __future__ import annotations

import asyncio
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _raw_response(status: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def guarded_h11(header_timeout_s: float = 10.0, body_idle_s: float = 30.0, max_per_ip: int = 64) -> type:
    """A uvicorn `http=` protocol class with the limits above; each call has its own per-address counts."""
    open_per_ip: Counter = Counter()
    refused = _raw_response("503 Service Unavailable", f"more than {max_per_ip} open connections from your address; "
                                                       "close some and retry\n")
    timed_out = _raw_response("408 Request Timeout", "the request did not arrive in time\n")

    class GuardedH11Protocol(H11Protocol):
        limits = {"header_timeout_s": header_timeout_s, "body_idle_s": body_idle_s, "max_per_ip": max_per_ip}

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._zp_timer: asyncio.TimerHandle | None = None
            self._zp_ip = self.client[0] if self.client else "unknown"
            self._zp_counted = open_per_ip[self._zp_ip] < max_per_ip
            if not self._zp_counted:
                transport.write(refused)
                transport.close()
                return
            open_per_ip[self._zp_ip] += 1
            self._zp_arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._zp_cancel()
            if getattr(self, "_zp_counted", False):
                self._zp_counted = False
                open_per_ip[self._zp_ip] -= 1
                if open_per_ip[self._zp_ip] <= 0:
                    del open_per_ip[self._zp_ip]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            state = self.conn.their_state
            if state is h11.IDLE:            # (part of) a request head: the clock runs from its first byte
                if self._zp_timer is None:
                    self._zp_arm(header_timeout_s)
            elif state is h11.SEND_BODY:     # a body trickling in: each read restarts the idle clock
                self._zp_arm(body_idle_s)
            else:                            # the request is in; the response takes the time it takes
                self._zp_cancel()

        def on_response_complete(self) -> None:
            self._zp_cancel()                # uvicorn's keep-alive timeout covers the idle gap to the next request
            super().on_response_complete()

        def _zp_arm(self, seconds: float) -> None:
            self._zp_cancel()
            self._zp_timer = self.loop.call_later(seconds, self._zp_expire)

        def _zp_cancel(self) -> None:
            if getattr(self, "_zp_timer", None) is not None:
                self._zp_timer.cancel()
                self._zp_timer = None

        def _zp_expire(self) -> None:
            self._zp_timer = None
            if self.transport.is_closing():
                return
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):   # no response head sent yet: say why
                self.transport.write(timed_out)
            self.transport.close()

    return GuardedH11Protocol
