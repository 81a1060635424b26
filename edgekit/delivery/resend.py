"""When a device sends an unconfirmed frame again: the re-send rules of docs/device.md (Delivery, Re-sends).

Re-sends must not feed an overload that delays confirmations (issue 20: a receiver more than the timeout
behind made every device re-send, tripling its input). Each frame has a timer: the confirm timeout, or the
confirmations' own measured delay if longer (:class:`ConfirmDelay`, as TCP sets its retransmission timeout),
×2 per attempt, capped, scaled by a jitter drawn per device so a fleet does not re-send in step. When it runs
out, :meth:`ResendRule.judge` decides whether the frame is lost:

- Receivers that publish their status (:mod:`edgekit.delivery.receiver_status`) and were heard lately say it:
  the frame is re-sent when every one of them has been caught up since at least the timeout after it was sent
  (it would have been confirmed: it never reached them), or, with one receiver, when a frame sent after it was
  confirmed (a receiver serves frames in order: this one was skipped). A receiver that says it is behind makes
  the device wait, however long.
- Without such a receiver (older receivers, or all of them gone: silent for :data:`GONE_AFTER` intervals and
  for twice their longest silence of the last five minutes, as a receiver starved of CPU speaks late), the
  device judges by the acks and results alone (:meth:`ResendRule._by_silence`).

Standard library only: the device imports it.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from dataclasses import dataclass
from typing import Callable

from edgekit.delivery.receiver_status import ReceiverStatus

__all__ = ["ANSWERED_SILENCE", "GONE_AFTER", "ConfirmDelay", "Silence", "Receivers", "ResendRule"]

#: Without receiver statuses, a frame a result answered is re-sent only after this many times the silence that
#: makes the receivers count as gone: it is stored, and only an ack lost with a receiver that stopped needs it.
ANSWERED_SILENCE = 4
GONE_AFTER = 10  # status intervals without a word after which a receiver may count as gone (see Receivers.live)
MAX_RECEIVERS = 256  # receivers tracked at once: bounds what a flood of statuses can make a device keep

log = logging.getLogger(__name__)

#: ``lost(sent_at, answered)``: whether an unconfirmed frame last sent at ``sent_at`` (monotonic) is to be re-sent.
Verdict = Callable[[float, bool], bool]


class ConfirmDelay:
    """Smoothed delay from sending a frame to its confirmation, and the timeout it implies (RFC 6298's
    SRTT + 4·RTTVAR, never below the configured timeout)."""

    def __init__(self, floor_s: float):
        self.floor_s = floor_s
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, delay_s: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = delay_s, delay_s / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - delay_s)
            self.srtt = 0.875 * self.srtt + 0.125 * delay_s

    @property
    def timeout_s(self) -> float:
        return self.floor_s if self.srtt is None else max(self.floor_s, self.srtt + 4 * self.rttvar)


class Silence:
    """How long the receivers have said nothing about this boot's frames, and what silence is normal for them
    now. A receiver starved of CPU answers in bursts seconds apart, and one that confirms our frames at r per
    second needs (frames awaiting it) / r to reach the newest: a silence shorter than twice the longest live
    pause of the last five minutes, or than twice that backlog time, proves nothing."""

    WINDOW_S = 300.0
    RATE_WINDOW_S = 60.0
    MIN_GAP_S = 1.0  # shorter pauses are just the gaps between acks

    def __init__(self):
        self.last = -math.inf
        self._gaps: collections.deque[tuple[float, float]] = collections.deque()  # (when it ended, its length)
        self._confirmed: collections.deque[tuple[float, int]] = collections.deque()  # (when, frames confirmed)
        self._confirmed_total = 0  # the frames in ``_confirmed``

    def progress(self, now: float, confirmed: int = 0) -> None:
        if now - self.last >= self.MIN_GAP_S and self.last > -math.inf:
            self._gaps.append((now, now - self.last))
        self.last = now
        if confirmed:
            self._confirmed.append((now, confirmed))
            self._confirmed_total += confirmed

    def limit(self, now: float, timeout_s: float, backlog: int) -> float:
        """The silence after which the receivers count as gone, with ``backlog`` frames awaiting them."""
        while self._gaps and now - self._gaps[0][0] > self.WINDOW_S:
            self._gaps.popleft()
        while self._confirmed and now - self._confirmed[0][0] > self.RATE_WINDOW_S:
            self._confirmed_total -= self._confirmed.popleft()[1]
        span = now - self._confirmed[0][0] if self._confirmed else 0.0
        rate = self._confirmed_total / span if span >= self.MIN_GAP_S else 0.0
        return max([timeout_s, 2 * backlog / rate if rate else 0.0] + [2 * gap for _, gap in self._gaps])


@dataclass
class _Heard:
    status: ReceiverStatus  # its latest
    silence: Silence  # the gaps between its statuses
    gone: bool = False

    @property
    def at(self) -> float:
        """Monotonic time the latest status arrived."""
        return self.silence.last


class Receivers:
    """The receivers heard lately, each with its latest status (publisher thread only)."""

    def __init__(self, device_id: str):
        self.device_id = device_id
        self._heard: dict[str, _Heard] = {}

    def heard(self, status: ReceiverStatus, now: float) -> None:
        heard = self._heard.get(status.receiver)
        if heard is None:
            if len(self._heard) >= MAX_RECEIVERS:
                return
            heard = self._heard[status.receiver] = _Heard(status, Silence(), gone=True)
        if heard.gone:
            log.info("%s: receiver %s reports its status: re-sends follow what it says", self.device_id,
                     status.receiver)
        heard.status, heard.gone = status, False
        heard.silence.progress(now)

    def live(self, now: float) -> list[_Heard]:
        """The receivers not gone. A receiver is gone once silent for :data:`GONE_AFTER` of its intervals and
        for twice its longest silence of the last five minutes (kept while it is gone: a starved receiver that
        speaks again keeps its record); one silent longer than those five minutes is forgotten."""
        live = []
        for name, h in list(self._heard.items()):
            silent = now - h.at
            if silent <= h.silence.limit(now, GONE_AFTER * h.status.every_s, 0):
                live.append(h)
            elif not h.gone:
                h.gone = True
                log.info("%s: receiver %s silent for %.1f s: gone", self.device_id, name, silent)
            elif silent > Silence.WINDOW_S:
                del self._heard[name]
        return live


class ResendRule:
    """The re-send timer of each frame and the verdict on the frames whose timer ran out."""

    def __init__(self, device_id: str, boot_id: int, timeout_s: float, cap_s: float):
        self.delay = ConfirmDelay(timeout_s)
        self.cap_s = cap_s
        self.silence = Silence()  # since the latest ack or result for this boot's frames
        self.receivers = Receivers(device_id)
        self.newest_confirmed_send = -math.inf  # the latest send time among the frames confirmed so far
        # Per device and boot, not per frame: devices do not re-send in step, a device's frames stay in order.
        self.jitter = random.Random(f"{device_id}/{boot_id}").uniform(0.8, 1.2)

    def wait_s(self, attempts: int) -> float:
        """How long after its PUBACK a frame sent ``attempts`` times before waits for its confirmation."""
        return min(self.cap_s, self.delay.timeout_s * 2 ** attempts) * self.jitter

    def confirmed(self, sent_at: float, attempts: int, now: float) -> None:
        """A frame was confirmed; one sent once times the confirmation delay (a re-sent one is ambiguous)."""
        self.newest_confirmed_send = max(self.newest_confirmed_send, sent_at)
        if attempts == 0:
            self.delay.sample(now - sent_at)

    def judge(self, now: float, backlog: int) -> Verdict:
        """The verdict on frames whose timer ran out, as of ``now``, with ``backlog`` frames unconfirmed."""
        live = self.receivers.live(now)
        if not live:
            return self._by_silence(now, backlog)
        timeout = self.delay.timeout_s
        # Each receiver vouches for the frames sent ``timeout`` before its status, once caught up that long.
        vouched = min(h.at - timeout if h.status.caught_up_s >= timeout else -math.inf for h in live)
        skipped = self.newest_confirmed_send if len(live) == 1 else -math.inf  # several: no order across them
        return lambda sent_at, answered: sent_at <= vouched or (not answered and sent_at < skipped)

    def _by_silence(self, now: float, backlog: int) -> Verdict:
        """Without statuses: lost when a later frame was confirmed (skipped), or once the receivers have neither
        confirmed nor answered any frame for longer than is normal for them now (gone, see :class:`Silence`);
        a frame a result answered (stored, its ack lost with a receiver that stopped) only after
        :data:`ANSWERED_SILENCE` times that."""
        silence = now - self.silence.last
        limit = self.silence.limit(now, self.delay.timeout_s, backlog)
        skipped = self.newest_confirmed_send
        return lambda sent_at, answered: (silence >= limit * ANSWERED_SILENCE if answered
                                          else silence >= limit or sent_at < skipped)
