"""A slow uplink for tests: the byte meter's relay, with the client → broker direction limited to ``rate``
bytes per second (None: unlimited), changeable while clients are connected."""

from __future__ import annotations

import socket
import threading
import time

from edgekit.mqtt.byte_meter import ByteMeter

CHUNK = 128  # bytes read at a time on the limited side: small, so the pace is smooth at a few kB/s


class ThrottledRelay(ByteMeter):
    """:class:`ByteMeter` whose upstream copy waits so that it forwards at most :attr:`rate` bytes per second."""

    def __init__(self, target, rate: float | None = None):
        self.rate = rate
        self._next = 0.0
        self._pace_lock = threading.Lock()
        super().__init__(target)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        super()._pump(_Paced(src, self) if direction == "up" else src, dst, direction)

    def pace(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit the rate (a token bucket with no burst)."""
        with self._pace_lock:
            now = time.monotonic()
            if self.rate is None:
                self._next = now
                return
            start = max(self._next, now)
            self._next = start + nbytes / self.rate
        time.sleep(max(0.0, start - now))


class _Paced:
    """A socket whose ``recv`` returns at most :data:`CHUNK` bytes, each chunk paced by the relay."""

    def __init__(self, sock: socket.socket, relay: ThrottledRelay):
        self.sock, self.relay = sock, relay

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(min(size, CHUNK))
        self.relay.pace(len(data))
        return data

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)
