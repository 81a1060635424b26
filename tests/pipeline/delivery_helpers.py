"""Helpers of the delivery tests: an in-process agent in a thread, an in-process receiver, database reads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pipeline_helpers import db_rows
from edgekit.device.agent import Agent, AgentConfig
from edgekit.mqtt import parse_broker_url
from edgekit.server.receiver import Receiver, ReceiverConfig


class RunningAgent:
    """``Agent.run`` on a thread; :meth:`finish` stops it (if still running) and returns its final stats."""

    def __init__(self, bundle: Path, url: str, spool: Path, source, device_id: str = "cam-d", **kw):
        cfg = AgentConfig(bundle=bundle, broker=parse_broker_url(url), device_id=device_id, source=str(source),
                          fps=kw.pop("fps", 0), spool=spool, confirm_timeout_s=kw.pop("confirm_timeout_s", 1.0),
                          heartbeat_s=kw.pop("heartbeat_s", 0.3), linger_s=kw.pop("linger_s", 60.0), **kw)
        self.agent = Agent(cfg)
        self.stop_event = threading.Event()
        self.stats: dict | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RunningAgent":
        self.thread.start()
        return self

    def _run(self) -> None:
        self.stats = self.agent.run(self.stop_event)

    def finish(self, timeout: float = 20.0) -> dict:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent did not stop"
        return self.stats


def start_receiver(bundle: Path, url: str, db: Path, client_id: str = "rx-d", **kw) -> Receiver:
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(url), db=db, client_id=client_id, **kw)
    receiver = Receiver(cfg)
    receiver.ledger.check_every_s = kw.get("gap_grace_s", 1.0) / 2 if "gap_grace_s" in kw else 1.0
    receiver.start()
    assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
    return receiver


def rows(db: Path, sql: str, *args) -> list:
    """:func:`db_rows`, or [] while the receiver has not created the table yet."""
    try:
        return db_rows(db, sql, *args)
    except sqlite3.OperationalError:
        return []


def seqs(db: Path, device: str, boot_id: int) -> list[int]:
    return [s for (s,) in rows(db, "SELECT seq FROM results WHERE device = ? AND boot_id = ? ORDER BY seq",
                               device, boot_id)]
