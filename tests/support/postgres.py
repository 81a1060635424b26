"""PostgreSQL fixtures: a real server per test session (Debian's ``postgresql`` package, which ``make test``
installs), a fresh database per test, and ``results_db``: the store's tests run against SQLite and PostgreSQL.

The server runs from a temporary data directory (``initdb``, then ``postgres`` itself, not a system service)
on a free loopback port, with its unix socket in the same directory. PostgreSQL refuses to run as root, so
as root it runs as the ``postgres`` user the package creates (else ``nobody``), started with
``subprocess.Popen(user=...)``: no runuser, no shell, so the process the test holds *is* the server (a
``kill -9`` in a test kills the server, not a wrapper). TCP logins need a password (scram-sha-256), as in
production; the unix socket trusts its owner. A missing PostgreSQL fails loudly, like a missing Mosquitto.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from edgekit.mqtt.broker import free_port

SUPERUSER = "edgekit"


def find_postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: ``EDGEKIT_POSTGRES_BIN``, Debian's newest
    /usr/lib/postgresql/*/bin, or the PATH's."""
    candidates = [os.environ.get("EDGEKIT_POSTGRES_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The user to run the server as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


class PostgresServer:
    """One PostgreSQL server in its own temporary folder: ``start()``, ``url(dbname)``, ``admin(sql)``, ``stop(sig)``."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="edgekit-pg-"))  # not under pytest's tmp: that is 0700 root
        self.data = self.dir / "data"
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.process: subprocess.Popen | None = None
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._as_user([self.bin / "initdb", "-D", self.data, "-U", SUPERUSER, f"--pwfile={pwfile}", "-E", "UTF8",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"],
                      wait=True)
        pwfile.unlink()

    def _as_user(self, args: list, wait: bool = False) -> subprocess.Popen:
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        log = open(self.dir / "log", "ab")
        process = subprocess.Popen([str(a) for a in args], cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, **kw)
        log.close()
        if wait and process.wait(60) != 0:
            pytest.fail(f"{args[0]} failed:\n{self.log_text()}")
        return process

    def start(self, timeout: float = 30.0) -> "PostgresServer":
        """Start (or restart) the server on the same port and data; return once it accepts logins."""
        self.process = self._as_user([self.bin / "postgres", "-D", self.data, "-p", self.port,
                                      "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                                      "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited with {self.process.returncode}:\n{self.log_text()}")
            if self._ready():
                return self
            time.sleep(0.05)
        pytest.fail(f"postgres did not accept logins within {timeout} s:\n{self.log_text()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def url(self, dbname: str, password: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}:{password or self.password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement (CREATE DATABASE cannot run in a transaction) as the superuser."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as con:
            con.execute(sql)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """Stop the server (SIGINT: PostgreSQL's fast shutdown, closing every connection; SIGKILL: a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        children = _children(self.process.pid)
        self.process.send_signal(sig)
        self.process.wait(timeout)
        deadline = time.monotonic() + timeout  # a killed server's backends exit by themselves, soon: a new server
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)  # on the same data would refuse to start while they hold its shared memory

    def log_text(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The server's child processes (its backends and helpers), from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (see the module docstring)."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (or set EDGEKIT_POSTGRES_BIN to the "
                    "folder of initdb and postgres)")
    server = PostgresServer(bin_dir).start()
    yield server
    server.close()


@pytest.fixture
def own_postgres(postgres_server, request):
    """A server of this test's own, for tests that stop, kill or restart it (its log printed on failure)."""
    server = PostgresServer(postgres_server.bin).start()
    server.admin("CREATE DATABASE results")
    yield server
    if any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call")):
        print(f"\n---- postgres log ----\n{server.log_text()}")
    server.close()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's server, dropped after the test."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    postgres_server.admin(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def results_db(request, tmp_path) -> str:
    """A results database for the store, each test run once per back end: a new SQLite file, or the URL of a
    fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "r.sqlite")
    return request.getfixturevalue("postgres_url")


def query(db: str, sql: str, *args) -> list[tuple]:
    """Rows of ``sql`` (``?`` placeholders) read from the results database ``db``, SQLite or PostgreSQL, in a
    connection of its own, as a user would."""
    from edgekit.server.store import open_database

    database = open_database(db, read_only=True)
    try:
        return [tuple(row) for row in database.conn.execute(sql, args).fetchall()]
    finally:
        database.close()
