"""A loopback MLflow tracking server, and a throwaway PostgreSQL cluster to put behind it.

For the tests and benchmarks that take the path users take with a shared server: runs logged
over HTTP, artifacts uploaded through the server (``mlflow-artifacts:``) into its
``--artifacts-destination``. Everything binds to 127.0.0.1 and lives in the given folders.

Public API: :func:`auth_settings`, :func:`free_port`, :func:`mlflow_server`, :func:`postgres_cluster`,
:func:`postgres_missing`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

HOST = "127.0.0.1"
PG_USER = "postgres"  # PostgreSQL refuses to run as root: as root, the cluster runs as this user


def _pg_bin() -> Path:
    """$DSC_PG_BIN, else the newest /usr/lib/postgresql/VERSION/bin (Debian's layout)."""
    if os.environ.get("DSC_PG_BIN"):
        return Path(os.environ["DSC_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts: Path,
    log: Path,
    workers: int = 1,
    timeout: float = 180.0,
    port: int | None = None,
    auth: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run ``mlflow server`` on a loopback port; yield its ``http://`` tracking URI.

    Artifacts are served (clients read and write ``mlflow-artifacts:`` through the server) and
    stored under ``artifacts``; the server's output goes to ``log``. The server (its process
    group) is stopped on exit. ``port`` (default: a free one) lets a server be restarted
    where its clients expect it. ``auth`` (the environment of :func:`auth_settings`) starts
    MLflow's basic-auth app (``--app-name basic-auth``).
    """
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        str(workers),
        *(["--app-name", "basic-auth"] if auth else []),
    ]
    # The job runner (a third process, for GenAI jobs) is not needed to track runs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(auth or {})}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://{HOST}:{port}"
    try:
        _wait_healthy(uri, proc, log, timeout)
        yield uri
    finally:
        _stop(proc)


def auth_settings(folder: Path, admin_password: str, default_permission: str = "READ") -> dict[str, str]:
    """The environment that starts MLflow's basic-auth app with its user store in ``folder``.

    Writes ``folder/basic_auth.ini`` (users and grants in ``folder/basic_auth.db``; users
    without a grant get ``default_permission``); the admin ``admin`` is created on the first
    start with ``admin_password`` (MLflow refuses to start without one, and wants 12
    characters at least). The Flask secret that signs the UI's CSRF tokens is drawn at random.
    """
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server at {uri} not healthy after {timeout:.0f} s: {_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the CLI and its uvicorn worker), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


def postgres_missing() -> str | None:
    """Why a PostgreSQL cluster cannot be started here, or None when it can."""
    pg_bin = _pg_bin()
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (pg_bin / b).exists()]
    if missing:
        return f"PostgreSQL binaries {', '.join(missing)} not found in {pg_bin} (set DSC_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run PostgreSQL as"
        if not shutil.which("runuser"):
            return "running as root and runuser is missing (PostgreSQL refuses to run as root)"
    return None


@contextlib.contextmanager
def postgres_cluster(timeout: float = 60.0) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free loopback port, in a temporary folder; yield its
    SQLAlchemy URI (``postgresql+psycopg2://``), which ``mlflow server`` takes as it is.

    Trust authentication on 127.0.0.1 only, durability off (a throwaway store). The cluster is
    stopped and its folder removed on exit.
    """
    reason = postgres_missing()
    if reason:
        raise RuntimeError(reason)
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="dsc-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", PG_USER, "--"]
    data, log = root / "data", root / "server.log"
    opts = (
        f"-p {port} -k {root} -c listen_addresses={HOST} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        _pg(
            as_user,
            "initdb",
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
        )
        _pg(as_user, "pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)), "start")
        try:
            # SQLAlchemy's bare postgresql:// picks psycopg 3; the project installs psycopg2
            yield f"postgresql+psycopg2://{PG_USER}@{HOST}:{port}/postgres"
        finally:
            _pg(as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pg(as_user: list[str], binary: str, *args: str) -> None:
    proc = subprocess.run([*as_user, str(_pg_bin() / binary), *args], capture_output=True, text=True, cwd="/")
    if proc.returncode:
        raise RuntimeError(f"{binary} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")


__all__ = ["auth_settings", "free_port", "mlflow_server", "postgres_cluster", "postgres_missing"]
