"""Warm worker: a process that has imported torch, transformers and peft once, and forks a child
for each ``irrepro`` job of a Snakemake run instead of letting every job import them again.

At mini scale a model job (finetune, rerank_eval, ablate, ...) spends 4-6 s of its 8-20 s importing
the libraries; forking a process that already holds them costs a few milliseconds. The Snakefile
starts one worker per run (``onstart``) and names its socket in ``$IRREPRO_WARM_SOCKET``, which
every job inherits; ``irrepro`` (cli.main) hands its arguments, environment, working directory and
stdin/stdout/stderr to the worker and exits with the job's exit status. Without the variable, with
no worker listening, or with an environment the preloaded libraries would not have seen (any
variable they read at import time differs: see ``IMPORT_TIME_ENV``), the job runs in its own
process as before, so ``dvc repro`` and a plain ``irrepro ...`` are unchanged.

What the child runs is the project's code imported fresh in the child: the worker preloads only
third-party libraries, so a change to the package between two jobs is seen by the second one.
The child runs in its own process group; when the client dies (Snakemake cancels the job) the
group is terminated. ``IRREPRO_WARM_WORKER=0`` switches the worker off.

Protocol (one connection per job, AF_UNIX stream): the client sends an 8-byte length and a JSON
request with its three standard file descriptors attached (SCM_RIGHTS); the worker answers one
JSON line ``{"accepted": true}`` or ``{"accepted": false, "why": ...}``, and after the job
``{"status": <exit status>}``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import time

ENV_SOCKET = "IRREPRO_WARM_SOCKET"
ENV_SWITCH = "IRREPRO_WARM_WORKER"
# Third-party modules the worker imports before it accepts jobs (the model jobs' import time).
# Not pyserini/jnius: a JVM must be started in the process that uses it, never inherited by fork.
PRELOAD = (
    "numpy", "pandas", "torch", "safetensors.torch", "tokenizers", "transformers", "peft",
    "transformers.models.llama.modeling_llama", "transformers.models.mistral.modeling_mistral",
    "transformers.models.gpt_neox.modeling_gpt_neox", "transformers.trainer", "peft.tuners.lora",
    "ranx", "scipy.stats", "sentence_transformers", "jsonschema", "shtab", "yaml",
)
# Environment variables a preloaded library may read when it is imported (cache locations,
# offline switches, thread counts, devices). A job whose value of any of them differs from the
# worker's runs cold, in its own process.
IMPORT_TIME_ENV = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "CUDA", "NVIDIA", "OMP_", "MKL_",
                   "OPENBLAS_", "GOTO_", "VECLIB_", "NUMEXPR_", "KMP_", "TOKENIZERS", "PYTHON", "LD_", "XDG_",
                   "NUMBA", "SAFETENSORS", "PEFT", "ACCELERATE", "BITSANDBYTES", "TRITON", "WANDB")
# Snakemake gives every job OMP_NUM_THREADS etc. = its threads: the worker is started with the
# model jobs' value, so their jobs match it and a job with other threads runs cold.
THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_HEADER = struct.Struct("!Q")
# in a job run by the worker: the modules it had imported before the job began (irrepro.sidecar)
preloaded: frozenset[str] = frozenset()
_POLL_S = 0.2


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


# ------------------------------------------------------------------------------ the run's side
_running: dict = {}


def start_for_run(log_path: str, threads: int) -> None:
    """Start the run's worker (Snakefile ``onstart``) and export its socket to the jobs, which
    Snakemake runs with ``threads`` in OMP_NUM_THREADS and the like."""
    if not enabled() or _running:
        return
    import subprocess

    # /tmp, not the project: a UNIX socket path is limited to ~100 characters
    folder = tempfile.mkdtemp(prefix="irrepro-warm-")
    path = os.path.join(folder, "socket")
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "irrepro.warm_worker", path, "--parent", str(os.getpid())],
                                env={**os.environ, **dict.fromkeys(THREAD_ENV, str(threads))},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _running.update(proc=proc, folder=folder)
    os.environ[ENV_SOCKET] = path


def stop_for_run() -> None:
    """Stop the run's worker (Snakefile ``onsuccess`` / ``onerror``); jobs after this run cold."""
    import shutil
    import subprocess

    os.environ.pop(ENV_SOCKET, None)
    if not _running:
        return
    proc = _running.pop("proc")
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(_running.pop("folder"), ignore_errors=True)


# ------------------------------------------------------------------------------ client side
def delegate(argv: list[str]) -> int | None:
    """Run ``irrepro argv`` in the warm worker; None when there is none to take it (run here)."""
    path = os.environ.get(ENV_SOCKET)
    if not path or not enabled():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                              "executable": sys.executable, "umask": _umask()}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        reader = conn.makefile("r", encoding="utf-8")
        answer = json.loads(reader.readline() or "{}")
    except (OSError, ValueError):
        conn.close()
        return None
    if not answer.get("accepted"):
        conn.close()
        return None

    def cancel(signum, _frame):  # closing the connection makes the worker terminate the job
        conn.close()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, cancel)
    try:
        line = reader.readline()
    except OSError:
        line = ""
    if not line:
        print(f"irrepro: the warm worker ({path}) went away before the job ended; "
              f"rerun, or set {ENV_SWITCH}=0 to run jobs in their own processes", file=sys.stderr)
        return 1
    return int(json.loads(line)["status"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------ worker side
def serve(path: str, parent_pid: int | None = None, preload: tuple[str, ...] = PRELOAD) -> None:
    """Preload, then accept jobs on ``path`` until SIGTERM or until ``parent_pid`` has gone."""
    started = time.monotonic()
    own_env = dict(os.environ)
    for name in preload:
        __import__(name)
    # variables the libraries set for themselves on import: a cold job would have them too
    import_env = {k: v for k, v in os.environ.items() if k not in own_env}
    tmp = f"{path}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(64)
    os.replace(tmp, path)  # the socket appears only once the worker can take jobs
    print(f"warm worker {os.getpid()}: {len(preload)} modules preloaded in "
          f"{time.monotonic() - started:.1f}s, listening on {path}", flush=True)

    def stop(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # jobs' supervisors are reaped by the kernel
    listener.settimeout(1.0)
    jobs = 0
    try:
        while parent_pid is None or os.getppid() == parent_pid:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            jobs += 1
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = 1
                try:
                    code = _supervise(conn, own_env, import_env)
                finally:
                    os._exit(code)
            conn.close()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
        print(f"warm worker {os.getpid()}: stopped after {jobs} job(s)", flush=True)


def _refusal(request: dict, own_env: dict) -> str | None:
    if request.get("executable") != sys.executable:
        return f"another interpreter ({request.get('executable')})"
    env = request["env"]
    changed = sorted(k for k in set(env) | set(own_env)
                     if k.startswith(IMPORT_TIME_ENV) and env.get(k) != own_env.get(k))
    return f"import-time environment differs: {', '.join(changed)}" if changed else None


def _supervise(conn: socket.socket, own_env: dict, import_env: dict) -> int:
    """One job: fork the child that runs it, relay its exit status, kill it if the client goes."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while len(data) < _HEADER.size or len(data) < _HEADER.size + _HEADER.unpack_from(data)[0]:
        more = conn.recv(1 << 20)
        if not more:
            return 1
        data += more
    request = json.loads(data[_HEADER.size:])
    job = " ".join(["irrepro", *request["argv"]])
    why = _refusal(request, own_env) if len(fds) == 3 else "no standard streams received"
    conn.sendall((json.dumps({"accepted": why is None, "why": why}) + "\n").encode())
    if why is not None:
        print(f"left to run cold ({why}): {job}", flush=True)
        return 0
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.setpgid(0, 0)
        _run_job(request, fds, import_env)  # never returns
    for fd in fds:
        os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
            print(f"exit {code} after {time.monotonic() - started:.1f}s: {job}", flush=True)
            try:
                conn.sendall((json.dumps({"status": code}) + "\n").encode())
            except OSError:
                pass
            return 0
        readable, _, _ = select.select([conn], [], [], _POLL_S)
        if readable and not conn.recv(1):  # the client has gone (the job was cancelled): end the job
            _terminate(pid)
            print(f"cancelled by its client after {time.monotonic() - started:.1f}s: {job}", flush=True)
            return 0


def _terminate(pid: int) -> None:
    """SIGTERM to the job's process group, SIGKILL after 5 s; the job is reaped."""
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _run_job(request: dict, fds: list[int], import_env: dict) -> None:
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**import_env, **request["env"]})
        os.environ.pop(ENV_SOCKET, None)  # the job itself runs here, never delegated again
        tempfile.tempdir = None  # re-read $TMPDIR (Snakemake sets it per job)
        os.umask(request["umask"])
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        sys.argv = ["irrepro", *request["argv"]]
        global preloaded
        preloaded = frozenset(sys.modules)
        from .cli import main

        code = main(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - the job's own error path reports failures; this is a crash in it
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m irrepro.warm_worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("socket", help="path of the UNIX socket to listen on")
    ap.add_argument("--parent", type=int, help="exit when this process (the Snakemake run) has gone")
    ap.add_argument("--preload", help="comma-separated modules to import first (default: torch, transformers, "
                                      "peft and the model classes)")
    a = ap.parse_args(argv)
    serve(a.socket, a.parent, tuple(filter(None, a.preload.split(","))) if a.preload is not None else PRELOAD)
    return 0


if __name__ == "__main__":  # run as irrepro.warm_worker, not __main__: jobs read its `preloaded`
    from irrepro.warm_worker import main as package_main

    sys.exit(package_main())
