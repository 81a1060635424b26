"""The receiver's status: how far behind it is, said to every device every ``every_s`` so that devices wait
instead of re-sending while it catches up (issue 20: re-sends from devices that took a receiver behind for a
lost one tripled its input). The message is :class:`~edgekit.delivery.receiver_status.ReceiverStatus`
(docs/server.md, Receiver status)::

    link thread ──arrived()──► Backlog ◄──finished(n)── worker thread
                                  ▲ └─ read every every_s ─► edgekit/v1/$receivers/<receiver>/status, QoS 0
                                  │                          (link.send)
    the link's socket ──unread()──┘ sampled every 50 ms; both by a thread of its own that never waits for a batch

The backlog counts frames, not their ids: the worker finishes them in the order they arrived (one FIFO queue).
Frames can also wait before the receiver sees them: unread on its connection when its link thread falls behind
(a receiver starved of CPU: its queue then looks empty while frames wait for many seconds), or in the broker,
which holds back whatever exceeds the in-flight window. Both count as behind.
"""

from __future__ import annotations

import collections
import logging
import select
import threading
import time

from edgekit.delivery.receiver_status import BEHIND_S, ReceiverStatus
from edgekit.mqtt.client import RECEIVE_MAXIMUM
from edgekit.mqtt.client_loop import ClientLoop
from edgekit.mqtt.topics import device_id_problem, printable_id, receiver_status_topic

__all__ = ["Backlog", "StatusReporter", "receiver_name"]

log = logging.getLogger(__name__)
SAMPLE_S = 0.05  # how often the connection is checked for unread data (several times within BEHIND_S)


class Backlog:
    """The frames taken in and not finished yet, and since when none has waited more than :data:`BEHIND_S`.

    Behind means a frame waited longer than that in the queue, or data waited unread on the connection as long
    (every sample found some), or the queue filled the broker's in-flight window (the broker then holds more
    frames for us, unseen). ``caught_up_s`` counts from the end of the latest such time.
    """

    def __init__(self, window: int = RECEIVE_MAXIMUM):
        self.window = window
        self._lock = threading.Lock()
        self._arrivals: collections.deque[float] = collections.deque()  # monotonic arrival times, oldest first
        self._started = self._last_behind = time.monotonic()
        self._last_arrival: float | None = None
        self._lag_s: float | None = None
        self._unread_since: float | None = None  # the first of the latest samples that all found unread data

    def arrived(self) -> None:
        """A frame goes into the queue (call it before the queue's put: the worker may finish it at once)."""
        now = time.monotonic()
        with self._lock:
            self._arrivals.append(now)
            self._last_arrival = now
            if len(self._arrivals) >= self.window:
                self._last_behind = now

    def finished(self, frames: int, capture_ns: int) -> None:
        """``frames`` frames left the queue, stored or not; ``capture_ns`` is the newest one's capture time."""
        now = time.monotonic()
        with self._lock:
            if self._arrivals and now - self._arrivals[0] > BEHIND_S:
                self._last_behind = now
            for _ in range(min(frames, len(self._arrivals))):
                self._arrivals.popleft()
            if capture_ns > 0:  # 0: the frame carries no capture time
                self._lag_s = round(time.time_ns() / 1e9 - capture_ns / 1e9, 3)

    def unread(self, waiting: bool) -> None:
        """A sample of the connection: whether data waits on it, not read yet."""
        now = time.monotonic()
        with self._lock:
            if not waiting:
                self._unread_since = None
            elif self._unread_since is None:
                self._unread_since = now
            elif now - self._unread_since > BEHIND_S:
                self._last_behind = now

    def status(self, receiver: str, every_s: float) -> ReceiverStatus:
        now = time.monotonic()
        with self._lock:
            oldest = now - self._arrivals[0] if self._arrivals else 0.0
            unread = now - self._unread_since if self._unread_since is not None else 0.0
            if max(oldest, unread) > BEHIND_S or len(self._arrivals) >= self.window:
                self._last_behind = now
            idle = now - (self._last_arrival if self._last_arrival is not None else self._started)
            return ReceiverStatus(receiver, every_s, len(self._arrivals), round(oldest, 3),
                                  round(now - self._last_behind, 3), round(idle, 3), self._lag_s)


class StatusReporter(Backlog):
    """The backlog of one receiver, published by a thread of its own every ``every_s`` (0: never)."""

    def __init__(self, link: ClientLoop, every_s: float = 1.0):
        super().__init__()
        self.name = receiver_name(link)
        self.link = link
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-status", daemon=True)

    def start(self) -> None:
        problem = device_id_problem(self.name)
        if problem is not None:
            log.warning("no receiver status: the name %s cannot be a topic level (%s); devices judge re-sends by "
                        "the acks alone — give --client-id in letters, digits, '.', '_' and '-'",
                        printable_id(self.name), problem)
        elif self.every_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def current(self) -> ReceiverStatus:
        return self.status(self.name, self.every_s)

    def _run(self) -> None:
        topic_name = receiver_status_topic(self.name)
        due = time.monotonic() + self.every_s
        while not self._stop.wait(SAMPLE_S):
            self.unread(_unread(self.link))
            if time.monotonic() >= due:
                due = time.monotonic() + self.every_s
                self.link.send(topic_name, self.current().encode(), urgent=True)


def receiver_name(link: ClientLoop) -> str:
    """The name the broker knows the receiver by, which the ACL lets it write its status under: with credentials,
    its user name (``edgekit broker --secure`` makes it the client id), with a client certificate its common
    name (Mosquitto's ``use_identity_as_username``); else its client id."""
    security = link.url.security
    if security.username or security.cert is None:
        return security.username or link.client_id
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = x509.load_pem_x509_certificate(security.cert.read_bytes()).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(names[0].value) if names else link.client_id


def _unread(link: ClientLoop) -> bool:
    """Whether data waits on the link's connection, not read yet (a check that reads nothing: any thread)."""
    sock = link.client.socket() if link.client is not None else None
    if sock is None:
        return False
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed meanwhile by the link thread
        return False
