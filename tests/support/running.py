"""Running roles in-process and reading what they stored: polling for a condition, a device publisher, an
agent in a thread, a receiver, and reads of the results database."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from edgekit.device.agent import Agent, AgentConfig
from edgekit.device.publisher import Publisher
from edgekit.mqtt.urls import parse_broker_url
from edgekit.server.receiver import Receiver, ReceiverConfig


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its final value (so asserts show the outcome)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def start_publisher(spool, broker, **kw) -> Publisher:
    """A started publisher for device ``dev-1`` on ``broker``, MQTT 5."""
    pub = Publisher(spool, parse_broker_url(broker.url), "dev-1", "5", **kw)
    pub.start()
    return pub


def db_rows(db, sql: str, *args) -> list:
    """Rows of ``sql`` read from the results database ``db`` (a SQLite file, or a PostgreSQL URL: see
    support.postgres) in a connection of its own (as a user would)."""
    if str(db).startswith("postgresql://"):
        from support.postgres import query

        return query(db, sql, *args)
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


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
