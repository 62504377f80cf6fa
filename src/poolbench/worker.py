"""A warm worker for the pipeline's jobs: torch, transformers and poolbench imported once, one fork per job.

Every Snakemake job is a fresh Python process (the rules' one script, ``workflow/scripts/job.py``), and
importing torch, transformers and poolbench takes seconds: on two cores, much of a short job. So job.py
hands its job to a long-lived process that has imported them once. The worker forks; the child runs the
very script Snakemake wrote for the job (its own preamble restores the ``snakemake`` object, then job.py's
line calls :func:`poolbench.jobs.run`), in the same folder, with job.py's own stdin, stdout and stderr,
and its exit status comes back to job.py. The request is JSON (the script's path, argv and folder).

- One worker per interpreter, environment and code version (a hash of poolbench's own files): an edited
  module or a changed environment variable gets a new worker, never a stale one. A worker exits after
  ``IDLE_S`` seconds without a job.
- The worker imports and forks, nothing else (no torch op runs in it, so no thread pool is inherited).
- A job whose job.py goes away (Snakemake cancelling it) is killed with its process group; SIGTERM or
  SIGINT sent to job.py is passed on to the job.
- ``POOLBENCH_WORKER=0`` runs each job in its own process as before, and so does a SLURM job or any failure
  to reach a worker before the job started.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import json
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

IDLE_S = 120  # a worker with no job for this long exits
PRELOAD = ("torch", "transformers", "sklearn.linear_model", "pandas", "pyarrow.parquet", "poolbench.jobs",
           "poolbench.run", "poolbench.features", "poolbench.heads", "poolbench.topk", "poolbench.models")
VOLATILE_ENV = ("_", "OLDPWD", "PWD", "SHLVL")  # differ between shells, change no job
HEADER = struct.Struct("!Q")


class WorkerUnavailable(RuntimeError):
    """No worker could take the job before it started (the job then runs in its own process)."""


def enabled() -> bool:
    """On unless POOLBENCH_WORKER=0, and off inside a SLURM job (one job per allocation: nothing to share)."""
    return os.environ.get("POOLBENCH_WORKER", "1") != "0" and "SLURM_JOB_ID" not in os.environ


def worker_key() -> str:
    """Identifies the worker a job may use: interpreter, environment, and poolbench's files (path, size, mtime)."""
    h = hashlib.sha256(sys.executable.encode())
    for name in sorted(set(os.environ) - set(VOLATILE_ENV)):
        h.update(f"{name}={os.environ[name]}\0".encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(package)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def socket_path(key: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"poolbench-worker-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{key}.sock"


# ---- the job's side (job.py) ---------------------------------------------------------------------


def run_job(smk) -> None:
    """What job.py does: the job in a warm worker when possible, else here."""
    if enabled():
        try:
            code = submit(sys.argv[0], sys.argv)
        except WorkerUnavailable:
            pass
        else:
            sys.exit(code)
    from poolbench import jobs

    jobs.run(smk)


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(HEADER.pack(len(payload)) + payload)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _connect_or_start(path: Path, wait_s: float = 30.0) -> socket.socket:
    try:
        return _connect(path)
    except OSError:
        pass
    with open(path.with_suffix(".lock"), "w") as lock:  # one job starts the worker; the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _connect(path)
        except OSError:
            path.unlink(missing_ok=True)  # left by a worker that died
        with open(path.with_suffix(".log"), "ab") as log:
            subprocess.Popen([sys.executable, "-m", "poolbench.worker", str(path)], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                return _connect(path)
            except OSError:
                time.sleep(0.05)
    raise WorkerUnavailable(f"no worker answered at {path} within {wait_s:.0f} s")


def submit(script: str, argv: list[str]) -> int:
    """Run the job script ``script`` (with ``argv``) in the worker for this environment, started if needed;
    its exit status. Signals sent to this process meanwhile go to the job; the handlers are restored after."""
    if not Path(script).is_file():
        raise WorkerUnavailable(f"no job script at {script}")
    request = json.dumps({"script": str(Path(script).resolve()), "argv": list(argv), "cwd": os.getcwd()}).encode()
    conn = None
    try:
        conn = _connect_or_start(socket_path(worker_key()))
        conn.sendmsg([HEADER.pack(len(request))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        conn.sendall(request)
        pid = HEADER.unpack(_recv_exact(conn, HEADER.size))[0]
    except (OSError, EOFError) as exc:
        if conn is not None:
            conn.close()
        raise WorkerUnavailable(str(exc)) from exc

    def forward(signum, frame):  # to the job's process group
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        with conn:
            return HEADER.unpack(_recv_exact(conn, HEADER.size))[0]
    except (OSError, EOFError):
        print(f"poolbench: the worker running this job (pid {pid}) went away before the job ended",
              file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---- the worker's side ---------------------------------------------------------------------------


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.setblocking(True)
    msg, ancillary, _, _ = conn.recvmsg(HEADER.size, socket.CMSG_LEN(3 * array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(msg) < HEADER.size:
        msg += _recv_exact(conn, HEADER.size - len(msg))
    return json.loads(_recv_exact(conn, HEADER.unpack(msg)[0])), list(fds)


def _child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the job (its own process group, job.py's stdio and folder)."""
    os.setpgid(0, 0)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ["POOLBENCH_WORKER"] = "0"  # the script's own run_job runs the job here, in this child
    sys.argv = list(request["argv"])
    try:
        runpy.run_path(request["script"], run_name="__main__")
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # the job's own failure: its traceback, as job.py would print it
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass


def serve(path: Path) -> None:
    """Accept jobs at ``path`` until idle for IDLE_S seconds."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    jobs: dict[int, socket.socket | None] = {}  # pid -> the job.py connection waiting for its status
    idle_since = time.monotonic()
    try:
        while jobs or time.monotonic() - idle_since < IDLE_S:
            ready, _, _ = select.select([listener, *(c for c in jobs.values() if c)], [], [], 1.0)
            for conn in ready:
                if conn is listener:
                    client, _ = listener.accept()
                    try:
                        request, fds = _receive(client)
                    except Exception as exc:  # a request it cannot read: job.py runs the job itself
                        print(f"poolbench worker: unreadable request ({exc!r})", flush=True)
                        client.close()
                        continue
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        listener.close()
                        for other in jobs.values():
                            if other:
                                other.close()
                        client.close()
                        os._exit(_child(request, fds))
                    try:  # also in the child: whichever runs first
                        os.setpgid(pid, pid)
                    except OSError:
                        pass
                    for fd in fds:
                        os.close(fd)
                    _send_pid(client, pid)
                    jobs[pid] = client
                elif not conn.recv(1, socket.MSG_PEEK):  # job.py went away: stop its job
                    pid = next(p for p, c in jobs.items() if c is conn)
                    jobs[pid] = None
                    conn.close()
                    try:
                        os.killpg(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            while jobs:  # reap finished jobs, report their status
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                code = os.waitstatus_to_exitcode(status)
                conn = jobs.pop(pid, None)
                if conn is not None:
                    try:
                        conn.sendall(HEADER.pack(code if code >= 0 else 128 - code))
                    except OSError:
                        pass
                    conn.close()
                idle_since = time.monotonic()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _send_pid(conn: socket.socket, pid: int) -> None:
    try:
        conn.sendall(HEADER.pack(pid))
    except OSError:
        os.killpg(pid, signal.SIGTERM)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
