"""Counters and latencies at a glance: the ``edgekit server stats`` table read straight from the results
database, SQLite or PostgreSQL (so it works on a copy of the file, while receivers run, and after they are
gone)."""

from __future__ import annotations

from pathlib import Path

from edgekit.delivery.ranges import size, subtract, union
from edgekit.errors import UsageError
from edgekit.latency import percentiles
from edgekit.server.store import open_database

__all__ = ["summarize", "format_table"]


def summarize(db: str | Path) -> dict:
    """Per-device results, latencies (device capture → result stored), dead letters and receiver counters;
    a database that cannot be read (not a results database, a damaged one) is a one-line :class:`UsageError`."""
    database = open_database(db, read_only=True)
    try:
        return _summarize(database)
    except database.errors as err:
        raise UsageError(f"cannot read the results database {database.name}: {' '.join(str(err).split())}",
                         "pass the --db given to edgekit server run") from None
    finally:
        database.close()


def _summarize(database) -> dict:
    con, tables = database.conn, database.tables()
    devices = []
    for device, n, boots in con.execute(
            "SELECT device, COUNT(*), COUNT(DISTINCT boot_id) FROM results GROUP BY device ORDER BY device"):
        lat = [r[0] / 1e6 for r in con.execute(
            "SELECT done_ns - capture_ns FROM results WHERE device = ?", (device,))]
        devices.append({"device": device, "results": n, "boots": boots, **percentiles(lat)})
    all_lat = [r[0] / 1e6 for r in con.execute("SELECT done_ns - capture_ns FROM results")]
    batch = con.execute("SELECT AVG(batch_size) FROM results").fetchone()[0]  # PostgreSQL: a Decimal
    deadletters = _deadletter_totals(con, tables)
    samples = con.execute("SELECT COUNT(*) FROM deadletters").fetchone()[0]
    counters: dict[str, dict[str, int]] = {}
    for receiver, name, value in con.execute("SELECT receiver, name, value FROM counters ORDER BY 1, 2"):
        counters.setdefault(receiver, {})[name] = value
    delivery = _delivery(con, tables)
    for d in devices:
        d.update(delivery.get(d["device"], {"stored": d["results"], "dropped": 0, "missing": 0, "pending": 0}))
    total = sum(d["results"] for d in devices)
    return {"devices": devices, "results": total, "mean_batch": float(batch or 0.0), "deadletters": deadletters,
            "deadletter_samples": samples, "receivers": counters, **percentiles(all_lat)}


def _deadletter_totals(con, tables: set[str]) -> dict[str, int]:
    """Dead letters by reason: every one counted (``deadletter_totals``), not just the sample rows kept; a
    database written before the totals existed has only the rows."""
    sql = ("SELECT reason, SUM(count) FROM deadletter_totals GROUP BY reason ORDER BY reason"
           if "deadletter_totals" in tables else "SELECT reason, COUNT(*) FROM deadletters GROUP BY reason ORDER BY reason")
    return {reason: int(n) for reason, n in con.execute(sql)}  # PostgreSQL's SUM is a Decimal


def _delivery(con, tables: set[str]) -> dict[str, dict[str, int]]:
    """Per device (docs/server.md, Every frame accounted for): frames stored, dropped by the device's policy
    (and never stored), missing (holes older than the receiver's grace period) and pending (younger holes,
    which re-sends may still fill). Empty for a database written before the accounting existed."""
    if not {"seq_ranges", "gaps"} <= tables:
        return {}
    boots: dict[tuple[str, int], dict[str, list]] = {}
    for device, boot_id, kind, first, last in con.execute("SELECT device, boot_id, kind, first, last FROM seq_ranges"):
        boots.setdefault((device, boot_id), {}).setdefault(kind, []).append((first, last))
    out: dict[str, dict[str, int]] = {}
    for (device, _), kinds in boots.items():
        stored = union(kinds.get("stored", []))
        row = out.setdefault(device, {"stored": 0, "dropped": 0, "missing": 0, "pending": 0})
        row["stored"] += size(stored)
        row["dropped"] += size(subtract(union(kinds.get("dropped", [])), stored))
    for device, alarmed, first, last in con.execute("SELECT device, alarmed, first, last FROM gaps"):
        row = out.setdefault(device, {"stored": 0, "dropped": 0, "missing": 0, "pending": 0})
        row["missing" if alarmed else "pending"] += last - first + 1  # in Python: no 64-bit overflow
    return out


def format_table(summary: dict) -> str:
    """A plain-text table of :func:`summarize`'s output."""
    lines = [f"{'device':<20} {'results':>8} {'boots':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'dropped':>8} {'missing':>8}"]
    for d in summary["devices"]:
        lines.append(f"{d['device']:<20} {d['results']:>8} {d['boots']:>5} {d['p50_ms']:>8.1f} "
                     f"{d['p95_ms']:>8.1f} {d['p99_ms']:>8.1f} {d['dropped']:>8} {d['missing']:>8}")
    lines.append(f"{'all':<20} {summary['results']:>8} {'':>5} {summary['p50_ms']:>8.1f} "
                 f"{summary['p95_ms']:>8.1f} {summary['p99_ms']:>8.1f}")
    lines.append(f"mean batch size: {summary['mean_batch']:.1f}")
    dead = summary["deadletters"]
    lines.append("dead letters: " + (", ".join(f"{k} {v}" for k, v in dead.items()) if dead else "none")
                 + (f" ({summary['deadletter_samples']} samples kept)" if dead else ""))
    for receiver, counters in summary["receivers"].items():
        lines.append(f"receiver {receiver}: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    return "\n".join(lines)
