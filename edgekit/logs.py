"""Logs for the long-running roles (device agent, server receiver): one line per event, text or JSON.

``--json`` turns every record into one JSON object per line on stderr: ``ts``, ``level``, ``logger``,
``msg``, plus whatever the caller put in ``extra={...}`` (counters, latencies), so a log shipper can parse
them without regular expressions. It is strict JSON: a latency not measured yet (NaN) is ``null``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

__all__ = ["JsonFormatter", "setup_run_logging", "strict_json"]


def strict_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN and ±Infinity written as ``null``: Python writes them bare, which is not JSON,
    and strict parsers (jq, JavaScript, Go) reject the whole line."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float, at any depth, replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line, with the record's ``extra`` fields merged in."""

    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": round(record.created, 6), "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage()}
        body.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return strict_json(body, default=str)


def setup_run_logging(json_logs: bool, level: int = logging.INFO) -> None:
    """Route ``edgekit.*`` records at ``level`` to stderr, as JSON or as plain timestamped text."""
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        fmt.converter = time.localtime
        handler.setFormatter(fmt)
    logger = logging.getLogger("edgekit")
    logger.handlers[:] = [handler]
    logger.setLevel(min(level, logger.getEffectiveLevel()))
    logger.propagate = False
