"""`python -m dsc ARGS` processes forked from an interpreter that has already imported dsc's libraries.

A fresh `python -m dsc train` spends most of a tiny training importing torch, MLflow, its
PyTorch flavour, scikit-learn and torch's compiler stack. The end-to-end tests start dozens
of such processes, so each pytest process keeps one server (this module run as a script)
that imports them once and forks a child per command. The child is a process of its own, like
the one a user's shell starts: its own pid (signals and SIGKILL reach it alone), argument
vector, environment, working directory and standard streams; it runs ``dsc`` as ``-m`` does
(:func:`runpy.run_module` as ``__main__``) and leaves through the interpreter's normal exit,
atexit handlers included. Its exit status comes back as :class:`subprocess.Popen`'s would.
At its exit a child names the library modules it imported that the server lacked, and the
server imports them before its next fork, so that the first command of each kind pays its
imports for all that follow (Ray, gRPC and Lightning excepted; see :data:`_NOT_LEARNED`).

What a fork cannot give a child, fresh imports, is what the tests of imports and start-up
keep real processes for (``test_cli_startup``, ``test_layout``, the ``mlflow run`` entry
points). The server holds no thread, store or run, so a child inherits none. torch's thread
count, fixed when libgomp loads, is set again in each child from its ``OMP_NUM_THREADS``.

:func:`Popen` and :func:`run` take :mod:`subprocess`'s arguments for the streams, environment,
working directory, text and timeout, and answer with the same attributes (an option a fork
cannot honour is refused); a command other than ``[sys.executable, "-m", "dsc", ...]`` goes
to :mod:`subprocess` unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

PRELOAD = (
    "torch",
    "torch._dynamo",  # torch.optim's first optimizer imports it
    "mlflow",
    "sklearn.model_selection",
    "matplotlib.pyplot",
    "lmfit",
    "dsc.cli",
    "dsc.jobs.train",
    "dsc.jobs.analyze",
    "dsc.jobs.compare",
    "dsc.jobs.snapshot",
    "dsc.jobs.sweep",
)
# Never learned (see :func:`_learn`): Ray's and gRPC's fork handlers expect them imported after
# the fork, and whether Lightning is loaded changes what registering a model imports.
_NOT_LEARNED = ("ray", "grpc", "lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics")
_HEADER = struct.Struct("!I")


# --------------------------------------------------------------------------- the server (run as a script)


def _send(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _receive(sock: socket.socket, fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (and the file descriptors sent with it); None once the peer has closed."""
    header, got, _, _ = socket.recv_fds(sock, _HEADER.size, fds) if fds else (sock.recv(_HEADER.size), [], 0, 0)
    if len(header) < _HEADER.size:
        return None, got
    (size,), data = _HEADER.unpack(header), b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None, got
        data += chunk
    return json.loads(data), got


def _library_modules(names) -> list[str]:
    """Those of ``names`` (loaded modules) that come from the interpreter's or the environment's
    libraries or from dsc: never a module of a test's working directory or a learned exception."""
    roots = tuple({os.path.dirname(os.__file__), sys.prefix, sys.base_prefix, str(Path(__file__).parents[1] / "dsc")})
    keep = []
    for name in names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in _NOT_LEARNED or name in ("__main__", "dsc.__main__") or module is None:
            continue
        if name in sys.builtin_module_names or (path is not None and os.path.abspath(path).startswith(roots)):
            keep.append(name)
    return keep


def _imports_file(sock_path: str, pid: int) -> str:
    """Where child ``pid`` of the server at ``sock_path`` names what it imported (read once it is reaped)."""
    return f"{sock_path}.{pid}.imports"


def _report_imports(sock_path: str, before: set[str]) -> None:
    """At a child's exit: write the library modules it imported for the server to learn."""
    with open(_imports_file(sock_path, os.getpid()), "w") as f:
        f.write("\n".join(_library_modules(sorted(set(sys.modules) - before))))


def _learn(path: str) -> None:
    """In the server, between children: import what a finished child reported importing, so that
    the next child finds it loaded (the first command of each kind teaches the server its imports)."""
    import importlib

    try:
        with open(path) as f:
            names = f.read().split()
        os.unlink(path)
    except FileNotFoundError:  # killed, or left through os._exit: nothing to learn
        return
    for name in names:
        if name not in sys.modules:
            with contextlib.suppress(Exception):  # a module that imports only in the child's circumstances
                importlib.import_module(name)
    if threading.active_count() > 1:  # a fork must not copy a thread's held locks
        raise RuntimeError(f"a learned import started {threading.enumerate()[1:]} in the forking server")


def _child(request: dict, fds: list[int], default_threads: int, sock_path: str) -> None:
    """In the forked child: become ``python -m dsc ARGS`` and run it (does not return)."""
    import runpy

    import torch

    atexit.register(_report_imports, sock_path, set(sys.modules))

    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or default_threads))
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # as -m puts it first
    runpy.run_module("dsc", run_name="__main__", alter_sys=True)
    sys.exit(0)


def serve(sock_path: str) -> None:
    """Import :data:`PRELOAD`, then fork a child per request until stdin closes (the parent is gone)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import torch
    from mlflow.utils import requirements_utils

    from dsc.tracking.models import pytorch_flavour

    pytorch_flavour()  # mlflow.pytorch as a dsc process imports it

    # What MLflow learns once per process of the installed distributions (logging a model scans them)
    requirements_utils._init_packages_to_modules_map()

    default_threads = torch.get_num_threads()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    print("ready", flush=True)
    clients: dict[int, socket.socket] = {}  # child pid -> the connection that asked for it
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 0.02)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return
        if listener in readable:
            conn, _ = listener.accept()
            request, fds = _receive(conn, fds=3)
            if request is None:
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for other in clients.values():
                    other.close()
                _child(request, fds, default_threads, sock_path)
            for fd in fds:
                os.close(fd)
            _send(conn, {"pid": pid})
            clients[pid] = conn
        while clients:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = clients.pop(pid, None)
            if conn is not None:
                _send(conn, {"returncode": os.waitstatus_to_exitcode(status)})
                conn.close()
                _learn(_imports_file(sock_path, pid))


# --------------------------------------------------------------------------- the client (in pytest)


class _Server:
    """This pytest process's server, started on first use."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.path = ""
        self.lock = threading.Lock()

    def socket_path(self) -> str:
        with self.lock:
            if self.proc is None:
                directory = Path(os.environ.get("TMPDIR", "/tmp"))
                self.path = str(directory / f"dsc-forked-{os.getpid()}.sock")
                Path(self.path).unlink(missing_ok=True)
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                self.proc = subprocess.Popen(
                    [sys.executable, __file__, self.path],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=Path(__file__).parents[1],
                )
                line = self.proc.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"the forking server did not start: {line!r}")
                atexit.register(self.stop)
            return self.path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        for left in Path(self.path).parent.glob(Path(self.path).name + "*"):  # the socket, imports never learned
            left.unlink(missing_ok=True)


_SERVER = _Server()


def is_dsc(cmd) -> bool:
    """Whether ``cmd`` is ``[sys.executable, "-m", "dsc", ...]``."""
    return isinstance(cmd, list | tuple) and list(cmd[:3]) == [sys.executable, "-m", "dsc"]


def _stream(spec, target: int) -> tuple[int, int | None]:
    """(the child's end, our end or None) of its fd ``target`` (0, 1 or 2) for a subprocess-style argument."""
    if spec is None:
        return os.dup(target), None  # inherited, as subprocess does
    if spec == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR), None
    if spec == subprocess.PIPE:
        r, w = os.pipe()
        return (r, w) if target == 0 else (w, r)
    return os.dup(spec if isinstance(spec, int) else spec.fileno()), None


class ForkedPopen:
    """:class:`subprocess.Popen` for a forked ``python -m dsc`` child (see the module's docstring)."""

    def __init__(self, args, *, env=None, cwd=None, stdin=None, stdout=None, stderr=None, text=False, **rest):
        if rest:  # what a fork cannot do as subprocess would (a new session, preexec_fn...) is refused
            raise TypeError(f"forked.Popen does not take {sorted(rest)}: use subprocess.Popen")
        self.args = list(args)
        self.returncode: int | None = None
        ends = [_stream(stdin, 0), _stream(stdout, 1)]
        ends.append((os.dup(ends[1][0]), None) if stderr == subprocess.STDOUT else _stream(stderr, 2))
        request = {
            "args": [str(a) for a in self.args[3:]],
            "env": dict(os.environ if env is None else env),
            "cwd": str(cwd if cwd is not None else os.getcwd()),
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_SERVER.socket_path())
        data = json.dumps(request).encode()
        socket.send_fds(self._conn, [_HEADER.pack(len(data))], [e[0] for e in ends])
        self._conn.sendall(data)
        for child_end, _ in ends:
            os.close(child_end)
        reply, _ = _receive(self._conn)
        if reply is None:
            raise RuntimeError("the forking server closed the connection")
        self.pid = reply["pid"]
        mode = "w" if text else "wb"
        self.stdin = open(ends[0][1], mode) if ends[0][1] is not None else None  # noqa: SIM115
        mode = "r" if text else "rb"
        self.stdout = open(ends[1][1], mode) if ends[1][1] is not None else None  # noqa: SIM115
        self.stderr = open(ends[2][1], mode) if ends[2][1] is not None else None  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        reply, _ = _receive(self._conn)
        if reply is None:
            raise RuntimeError(f"the forking server lost child {self.pid}")
        self.returncode = reply["returncode"]
        self._conn.close()

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._collect()
        return self.returncode

    def communicate(self, timeout: float | None = None):
        if self.stdin is not None:
            self.stdin.close()
        results: dict[str, object] = {}

        def read(name: str, stream) -> None:
            results[name] = stream.read()
            stream.close()

        readers = [
            threading.Thread(target=read, args=(name, s), daemon=True)
            for name, s in (("out", self.stdout), ("err", self.stderr))
            if s is not None and not s.closed
        ]
        for t in readers:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0, deadline - time.monotonic()))
        return results.get("out"), results.get("err")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def Popen(args, **kwargs):
    """A forked child for ``python -m dsc ...``, else :class:`subprocess.Popen` itself."""
    return ForkedPopen(args, **kwargs) if is_dsc(args) else subprocess.Popen(args, **kwargs)


def run(args, *, capture_output=False, timeout=None, **kwargs):
    """:func:`subprocess.run` (without ``input`` and ``check``) for ``python -m dsc ...`` through :func:`Popen`."""
    if not is_dsc(args):
        return subprocess.run(args, capture_output=capture_output, timeout=timeout, **kwargs)
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = ForkedPopen(args, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
