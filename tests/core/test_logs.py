"""``--json`` logs and heartbeats are strict JSON: a value not measured yet (NaN) or infinite is ``null``."""

from __future__ import annotations

import contextlib
import io
import json
import logging

from edgekit.logs import JsonFormatter, strict_json


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_writes_non_finite_floats_as_null_at_any_depth():
    value = {"p50": float("nan"), "inf": float("inf"), "list": [1.5, float("-inf")], "nested": {"x": (float("nan"),)}}
    assert _strict(strict_json(value)) == {"p50": None, "inf": None, "list": [1.5, None], "nested": {"x": [None]}}
    assert "NaN" in json.dumps(value)  # what the standard library writes, and strict parsers reject


def test_json_log_lines_are_strict():
    record = logging.makeLogRecord({"msg": "summary", "levelname": "INFO", "name": "edgekit.server",
                                    "latency": {"p50_ms": float("nan"), "p95_ms": 3.25}, "rate": float("inf")})
    body = _strict(JsonFormatter().format(record))
    assert body["latency"] == {"p50_ms": None, "p95_ms": 3.25} and body["rate"] is None and body["msg"] == "summary"


def test_server_stats_json_is_strict_before_any_result(tmp_path):
    from edgekit.cli import main
    from edgekit.server.store import ResultStore

    db = tmp_path / "results.sqlite"
    ResultStore(db).close()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["server", "stats", "--db", str(db), "--json"]) == 0
    summary = _strict(out.getvalue())
    assert summary["results"] == 0 and summary["p50_ms"] is None
