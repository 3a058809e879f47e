"""The warm worker (irrepro.warm_worker): a real worker process on a real UNIX socket, real
``irrepro`` clients. Jobs run there must behave exactly as in their own process (streams, exit
status, working directory, environment); a client that is killed must take its job with it; a
worker whose run has gone must go too. The workers here preload only ``json`` (the library list
is not what is tested; the pipeline tests run the real one)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from irrepro import warm_worker

IRREPRO = os.path.join(BIN, "irrepro")


def _wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker(tmp_path):
    """A running worker: (socket path, its log, its process)."""
    sock = Path(f"/tmp/irrepro-test-{os.getpid()}-{tmp_path.name[-12:]}.sock")
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "irrepro.warm_worker", str(sock), "--preload", "json"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for(sock.exists, what="the worker's socket")
    yield sock, log, proc
    proc.terminate()
    proc.wait(timeout=10)
    assert not sock.exists(), "a stopped worker removes its socket"


def _irrepro(args, cwd, sock=None, **env):
    full = {k: v for k, v in os.environ.items() if k != warm_worker.ENV_SOCKET}
    full.update(env)
    if sock is not None:
        full[warm_worker.ENV_SOCKET] = str(sock)
    return subprocess.run([IRREPRO, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def _bad_params(tmp_path) -> Path:
    p = tmp_path / "bad params.yaml"
    p.write_text((ROOT / "params.yaml").read_text().replace("  k1: 0.9\n", "  k1: fast\n"))
    return p


def _untimed(log: str) -> str:
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "", log, flags=re.M)


def test_job_in_the_worker_behaves_as_in_its_own_process(worker, tmp_path):
    sock, log, _ = worker
    bad = _bad_params(tmp_path)
    for args in (["check-params", "--params", str(ROOT / "params.yaml")], ["check-params", "--params", bad.name]):
        cold = _irrepro(args, cwd=tmp_path if args[-1] == bad.name else ROOT)
        warm = _irrepro(args, cwd=tmp_path if args[-1] == bad.name else ROOT, sock=sock)
        assert warm.returncode == cold.returncode
        assert warm.stdout == cold.stdout
        # the same log and error lines (a relative path resolved in the client's working directory)
        assert _untimed(warm.stderr) == _untimed(cold.stderr)
    assert cold.returncode == 2 and "bm25.k1" in cold.stderr and "bad params.yaml" in cold.stderr
    text = log.read_text()
    assert "exit 0 after" in text and "exit 2 after" in text and "irrepro check-params --params bad params.yaml" in text


def test_job_sees_its_environment_and_records_that_it_ran_warm(worker, tmp_path):
    sock, log, _ = worker
    out = _irrepro(["check-params", "--params", str(ROOT / "params.yaml"), "--log", "cp.log"], cwd=tmp_path,
                   sock=sock, IRREPRO_TEST_MARK="x")
    assert out.returncode == 0, out.stderr
    import json

    car = json.loads((tmp_path / "cp.run.json").read_text())
    assert car["warm_worker"] is True and car["cwd"] == str(tmp_path)
    assert "json" not in car["imported"]  # preloaded by the worker: not the job's import cost
    cold = _irrepro(["check-params", "--params", str(ROOT / "params.yaml"), "--log", "cold.log"], cwd=tmp_path)
    assert json.loads((tmp_path / "cold.run.json").read_text())["warm_worker"] is False, cold.stderr


def test_a_different_import_time_environment_runs_cold(worker, tmp_path):
    sock, log, _ = worker
    out = _irrepro(["check-params", "--params", str(ROOT / "params.yaml")], cwd=ROOT, sock=sock,
                   HF_HUB_OFFLINE="1", OMP_NUM_THREADS="7")
    assert out.returncode == 0, out.stderr
    assert "left to run cold (import-time environment differs: HF_HUB_OFFLINE, OMP_NUM_THREADS)" in log.read_text()
    assert "exit 0" not in log.read_text()


def test_no_worker_listening_means_the_job_runs_here(tmp_path):
    gone = tmp_path / "no-such.sock"
    out = _irrepro(["check-params", "--params", str(ROOT / "params.yaml")], cwd=ROOT, sock=gone)
    assert out.returncode == 0, out.stderr
    assert warm_worker.delegate(["check-params"]) is None  # this process has no socket set


def test_killing_the_client_terminates_the_job(worker, tmp_path):
    sock, log, _ = worker
    url_file = tmp_path / "url"
    env = {k: v for k, v in os.environ.items()}
    env[warm_worker.ENV_SOCKET] = str(sock)
    client = subprocess.Popen([IRREPRO, "tools", "llm-serve", "--url-file", str(url_file)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: url_file.exists() and url_file.read_text().strip(), what="the server's URL")
    url = url_file.read_text().strip()

    def serving() -> bool:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    assert serving()
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=10) == 128 + signal.SIGTERM
    _wait_for(lambda: not serving(), timeout=20, what="the job to be terminated")
    _wait_for(lambda: "cancelled by its client after" in log.read_text(), timeout=20, what="the worker's record")


def test_worker_leaves_when_its_run_has_gone(tmp_path):
    sock = Path(f"/tmp/irrepro-test-{os.getpid()}-parent.sock")
    # a stand-in for the Snakemake run: it starts the worker watching itself (as onstart does), then waits
    run = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-m', 'irrepro.warm_worker', "
        f"{str(sock)!r}, '--preload', 'json', '--parent', str(os.getpid())]); time.sleep(60)")])
    _wait_for(sock.exists, what="the worker's socket")
    run.kill()
    run.wait()
    _wait_for(lambda: not sock.exists(), timeout=20, what="the worker to leave")


def test_switch_off(monkeypatch, tmp_path):
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "0")
    monkeypatch.setenv(warm_worker.ENV_SOCKET, str(tmp_path / "x.sock"))
    assert not warm_worker.enabled()
    assert warm_worker.delegate(["check-params"]) is None
    warm_worker.start_for_run(str(tmp_path / "w.log"), threads=1)  # switched off: starts nothing
    assert not (tmp_path / "w.log").exists()
