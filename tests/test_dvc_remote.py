"""Publishing with `dvc push` and restoring with `irrepro tools dvc-pull`.

Fast part: `align_mtimes` on a small real DVC project with a matching Snakefile, with
Snakemake itself as the judge of what is up to date. Slow part: the session's real mini run
(one config, pipeline_fixtures.snakemake_run) copied into a scratch git + DVC repository, pushed to the default remote (a directory
beside the clone) and pulled into fresh clones from that directory, over HTTP from a
server on 127.0.0.1, and from a remote that lacks one object.
"""

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import BIN, run
from pipeline_fixtures import copy_project

GIT_ID = ["-c", "user.name=irrepro-test", "-c", "user.email=test@example.org"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sm_mtime(path: Path) -> int:
    """The mtime Snakemake reads for an output (a directory's .snakemake_timestamp)."""
    stamp = path / ".snakemake_timestamp"
    return os.stat(stamp if stamp.is_file() else path).st_mtime_ns


def irrepro(args, cwd, check=True):
    """Run the CLI; return (exit code, combined output)."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([sys.executable, "-m", "irrepro", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"irrepro {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- fast: align_mtimes

# a -> b (directory with a .snakemake_timestamp) -> c, and d: c's bytes copied again one level
# down, so DVC's hard-linked cache gives c and d one inode.
SMALL_DVC = """
stages:
  a:
    cmd: echo A > a.txt
    deps: [src_a.txt]
    outs: [a.txt]
  b:
    cmd: mkdir -p b && cat a.txt src_b.txt > b/data.txt && touch b/.snakemake_timestamp
    deps: [a.txt, src_b.txt]
    outs: [b]
  c:
    cmd: cat b/data.txt > c.txt
    deps: [b]
    outs: [c.txt]
  d:
    cmd: cat c.txt > d.txt
    deps: [c.txt]
    outs: [d.txt]
"""
SMALL_SNAKEFILE = """
rule all:
    input: "d.txt"
rule a:
    input: "src_a.txt"
    output: "a.txt"
    shell: "echo A > a.txt"
rule b:
    input: "a.txt", "src_b.txt"
    output: directory("b")
    shell: "mkdir -p b && cat a.txt src_b.txt > b/data.txt && touch b/.snakemake_timestamp"
rule c:
    input: "b"
    output: "c.txt"
    shell: "cat b/data.txt > c.txt"
rule d:
    input: "c.txt"
    output: "d.txt"
    shell: "cat c.txt > d.txt"
"""


@pytest.fixture
def small_project(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    (tmp_path / ".dvc" / "config").write_text('[core]\n    analytics = false\n[cache]\n    type = "hardlink,copy"\n')
    (tmp_path / "dvc.yaml").write_text(SMALL_DVC)
    (tmp_path / "Snakefile").write_text(SMALL_SNAKEFILE)
    (tmp_path / "src_a.txt").write_text("source a\n")
    (tmp_path / "src_b.txt").write_text("source b\n")
    run(["dvc", "repro", "-q"], tmp_path)
    assert os.stat(tmp_path / "c.txt").st_ino == os.stat(tmp_path / "d.txt").st_ino  # the shared-inode case
    # What a pull leaves behind: outputs dated in reverse DAG order, source files older.
    t = os.stat(tmp_path / "src_b.txt").st_mtime_ns + 10**9
    for i, out in enumerate(["d.txt", "c.txt", "b/.snakemake_timestamp", "a.txt"]):
        os.utime(tmp_path / out, ns=(t + i * 10**9, t + i * 10**9))
    return tmp_path


def test_align_mtimes_orders_outputs_so_snakemake_has_nothing_to_do(small_project):
    from irrepro.dvcremote import align_mtimes

    assert "rule b:" in run(["snakemake", "-n", "--cores", "1"], small_project)  # as after a real pull
    assert align_mtimes(small_project) == (4, 0)
    p = small_project
    times = [sm_mtime(p / "a.txt"), sm_mtime(p / "b"), sm_mtime(p / "c.txt"), sm_mtime(p / "d.txt")]
    assert times == sorted(times) and len(set(times)) == 4, times
    assert all(t > os.stat(p / src).st_mtime_ns for t in times for src in ("src_a.txt", "src_b.txt"))
    assert os.stat(p / "c.txt").st_ino != os.stat(p / "d.txt").st_ino  # unshared to date them apart
    assert (p / "d.txt").read_text() == "A\nsource b\n"
    assert "Nothing to be done" in run(["snakemake", "-n", "--cores", "1"], p)
    assert "up to date" in run(["dvc", "status"], p)


def test_align_mtimes_leaves_stages_dvc_sees_as_changed_out_of_date(small_project):
    from irrepro.dvcremote import align_mtimes

    (small_project / "src_b.txt").write_text("edited before the pull\n")  # b is stale, a is not
    assert align_mtimes(small_project) == (3, 1)
    dry = run(["snakemake", "-n", "--cores", "1"], small_project)
    assert "rule b:" in dry and "rule c:" in dry and "rule d:" in dry and "rule a:" not in dry, dry
    assert sm_mtime(small_project / "b") < os.stat(small_project / "src_b.txt").st_mtime_ns


# --------------------------------------------------------------------------- slow: the real pipeline


def lock_outs(project: Path) -> dict[str, dict]:
    """path -> {md5, nfiles?} of every output recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o for st in lock["stages"].values() for o in st.get("outs", [])}


def objects_of(outs: dict[str, dict], remote: Path) -> set[str]:
    """Every object md5 a pull needs: file outputs, directory manifests and their files."""
    needed = set()
    for out in outs.values():
        needed.add(out["md5"])
        if out["md5"].endswith(".dir"):
            manifest = remote / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
            needed.update(entry["md5"] for entry in json.loads(manifest.read_text()))
    return needed


def assert_restored(clone: Path, published: Path, outs: dict[str, dict]):
    """Every output exists with the published bytes; file outputs match dvc.lock's md5."""
    for path, out in outs.items():
        src, dst = published / path, clone / path
        assert dst.exists(), f"{path} not restored"
        if not out["md5"].endswith(".dir"):
            assert md5(dst) == out["md5"], path
            continue
        # Snakemake's directory-output marker is not data: .dvcignore keeps it out of DVC
        files = sorted(f.relative_to(src) for f in src.rglob("*") if f.is_file() and f.name != ".snakemake_timestamp")
        assert len(files) == out["nfiles"], path
        for rel in files:
            assert md5(dst / rel) == md5(src / rel), f"{path}/{rel}"


@pytest.fixture(scope="module")
def published(snakemake_run, tmp_path_factory):
    """A finished mini run (one config), committed to git and pushed to the default remote."""
    base = tmp_path_factory.mktemp("publish")
    project = copy_project(snakemake_run.project, base / "project")
    run(["git", "add", "-A"], project)
    run(["git", *GIT_ID, "commit", "-q", "-m", "a finished run"], project)
    run(["dvc", "push"], project)
    remote = base / "irrepro-dvc-remote"  # .dvc/config's default: a directory beside the clone
    outs = lock_outs(project)
    assert outs and remote.is_dir()
    return SimpleNamespace(base=base, project=project, remote=remote, outs=outs)


def clone(published, name: str) -> Path:
    dest = published.base / name
    run(["git", "clone", "-q", str(published.project), str(dest)], published.base)
    return dest


@pytest.mark.slow
def test_push_then_pull_into_a_fresh_clone_restores_everything(published):
    dest = clone(published, "clone-local")
    irrepro(["tools", "dvc-pull"], dest)
    assert_restored(dest, published.project, published.outs)
    assert "up to date" in run(["dvc", "status"], dest)
    assert "Running stage" not in run(["dvc", "repro"], dest)
    assert "Nothing to be done" in run(["snakemake", "-n"], dest)
    assert run(["git", "status", "--porcelain"], dest).strip() == ""


class LoggingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, fmt, *args):  # keep the test output clean; remember the requests
        LoggingHandler.requests.append(f"{self.command} {self.path}")


@pytest.mark.slow
def test_pull_over_http_from_a_local_server(published):
    handler = lambda *a, **kw: LoggingHandler(*a, directory=str(published.remote), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dest = clone(published, "clone-http")
        run(["dvc", "remote", "add", "--local", "web", f"http://127.0.0.1:{server.server_address[1]}"], dest)
        LoggingHandler.requests.clear()
        irrepro(["tools", "dvc-pull", "-r", "web"], dest)
    finally:
        server.shutdown()
        server.server_close()
    fetched = {r.split()[1].rsplit("/", 2)[-2] + r.split()[1].rsplit("/", 2)[-1]
               for r in LoggingHandler.requests if r.startswith("GET /files/md5/")}
    needed = objects_of(published.outs, published.remote)
    assert needed <= fetched, f"not fetched over HTTP: {sorted(needed - fetched)[:5]}"
    assert_restored(dest, published.project, published.outs)
    assert "up to date" in run(["dvc", "status"], dest)
    assert "Nothing to be done" in run(["snakemake", "-n"], dest)


@pytest.mark.slow
def test_pull_from_a_remote_missing_an_object_names_the_output(published):
    broken = published.base / "broken-remote"
    shutil.copytree(published.remote, broken)
    path, out = next((p, o) for p, o in sorted(published.outs.items()) if not o["md5"].endswith(".dir"))
    (broken / "files" / "md5" / out["md5"][:2] / out["md5"][2:]).unlink()
    dest = clone(published, "clone-broken")
    run(["dvc", "remote", "add", "--local", "broken", str(broken)], dest)
    code, output = irrepro(["tools", "dvc-pull", "-r", "broken"], dest, check=False)
    assert code == 1
    assert f"not restored: {path}" in output and "remote 'broken'" in output and "dvc push" in output, output
    assert out["md5"] in output  # DVC's own message names the missing object
    assert not (dest / path).exists()


def test_every_output_reaches_the_remote_or_git(root):
    """`dvc push` publishes cached outputs only: an output with `cache: false` reaches a clone
    only through git, so it must not be git-ignored (else a pull cannot restore it)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    unpublished = []
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict) and any(v.get("cache") is False for v in entry.values()):
                    for profile in ("mini", "paper"):
                        path = next(iter(entry)).replace("${profile}", profile)
                        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
                        if ignored:
                            unpublished.append(f"{name}: {path}")
    assert not unpublished, (
        "outputs that are neither cached (pushed) nor tracked by git, so `dvc pull` cannot restore "
        "them; drop `cache: false` in dvc.yaml: " + ", ".join(unpublished)
    )
