"""Helpers shared by the pipeline tests: polling for a condition and starting a device publisher."""

from __future__ import annotations

import sqlite3
import time
from typing import Callable

from edgekit.device.publisher import Publisher
from edgekit.mqtt import parse_broker_url


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its final value (so asserts show the outcome)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def start_publisher(spool, broker, **kw) -> Publisher:
    """A started publisher for device ``dev-1`` (boot id 5) on ``broker``."""
    pub = Publisher(spool, parse_broker_url(broker.url), "dev-1", "5", **kw)
    pub.start()
    return pub


def db_rows(db, sql: str, *args) -> list:
    """Rows of ``sql`` read from the results database ``db`` in a connection of its own (as a user would)."""
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
