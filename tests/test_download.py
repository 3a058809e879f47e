"""irrepro.download against a real local HTTP server, real mirror dirs and a real hub cache."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import yaml

from irrepro import download as dl
from irrepro.download import DownloadError, HFDataset, Source, SourcesError, fetch, load_sources

GOOD = b"qid\tquery\n1\twhat is a lobster roll\n" * 50
BAD = b"not the file you are looking for\n" * 50


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_source(url: str, data: bytes = GOOD, **kw) -> Source:
    kw.setdefault("sha256", sha(data))
    return Source(name="toy_topics", mirror="toy/topics.txt", dest="trec/topics.txt",
                  profiles=("mini",), url=url, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """No stray mirror from the environment, no proxy for loopback, no retry sleeps."""
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF", 0.0)
    monkeypatch.setattr(dl, "RETRIES", 2)


class Server:
    """Serves ``routes[path]``: bytes, or ("short", bytes) = announce more than is sent, then hang up."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                body = outer.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                short = isinstance(body, tuple)
                data = body[1] if short else body
                self.send_response(200)
                self.send_header("Content-Length", str(len(data) * (3 if short else 1)))
                self.end_headers()
                self.wfile.write(data)
                if short:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


# --------------------------------------------------------------------------- HTTP


def test_good_download_verifies_and_lands(server, tmp_path):
    server.routes["/topics.txt"] = GOOD
    src = make_source(server.base + "/topics.txt")
    path = fetch(src, tmp_path / "raw", mirrors=[])
    assert path == tmp_path / "raw" / "trec" / "topics.txt"
    assert path.read_bytes() == GOOD
    assert leftovers(path.parent) == ["topics.txt"]
    assert server.hits == ["/topics.txt"]


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    server.routes["/topics.txt"] = BAD
    url = server.base + "/topics.txt"
    with pytest.raises(DownloadError) as err:
        fetch(make_source(url), tmp_path / "raw", mirrors=[])
    msg = str(err.value)
    assert sha(GOOD) in msg and sha(BAD) in msg  # expected and actual
    assert "expected" in msg and "actual" in msg and url in msg  # and where the bytes came from
    assert not (tmp_path / "raw" / "trec" / "topics.txt").exists()
    assert leftovers(tmp_path / "raw" / "trec") == []  # no temp files either


def test_interrupted_download_is_retried_and_leaves_nothing(server, tmp_path):
    server.routes["/topics.txt"] = ("short", GOOD)
    with pytest.raises(DownloadError) as err:
        fetch(make_source(server.base + "/topics.txt"), tmp_path / "raw", mirrors=[])
    assert "toy_topics" in str(err.value)
    assert len(server.hits) == dl.RETRIES  # retried, then gave up
    assert leftovers(tmp_path / "raw" / "trec") == []


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(make_source(server.base + "/missing.txt"), tmp_path / "raw", mirrors=[])
    assert server.hits == ["/missing.txt"]


def test_existing_correct_file_is_not_refetched(server, tmp_path):
    server.routes["/topics.txt"] = GOOD
    dest = tmp_path / "raw" / "trec" / "topics.txt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GOOD)
    assert fetch(make_source(server.base + "/topics.txt"), tmp_path / "raw", mirrors=[]) == dest
    assert server.hits == []


def test_corrupt_existing_file_is_replaced(server, tmp_path):
    server.routes["/topics.txt"] = GOOD
    dest = tmp_path / "raw" / "trec" / "topics.txt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GOOD[:-7])  # truncated by an earlier crash
    fetch(make_source(server.base + "/topics.txt"), tmp_path / "raw", mirrors=[])
    assert dest.read_bytes() == GOOD
    assert server.hits == ["/topics.txt"]
    assert leftovers(dest.parent) == ["topics.txt"]


# --------------------------------------------------------------------------- mirrors


def write_mirror(root: Path, data: bytes = GOOD) -> Path:
    f = root / "toy" / "topics.txt"
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    return f


def test_mirror_hit_needs_no_network(tmp_path):
    write_mirror(tmp_path / "mirror")
    src = make_source(f"http://127.0.0.1:{closed_port()}/topics.txt")  # nothing listens there
    path = fetch(src, tmp_path / "raw", mirrors=[str(tmp_path / "mirror")], allow_network=True)
    assert path.read_bytes() == GOOD
    assert not path.is_symlink()


def test_env_mirror_relative_to_cwd(tmp_path, monkeypatch):
    write_mirror(tmp_path / "m2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(dl.MIRROR_ENV, "does-not-exist" + dl.os.pathsep + "m2")
    assert dl.mirror_dirs(["m1"]) == [tmp_path / "m1", tmp_path / "does-not-exist", tmp_path / "m2"]
    src = make_source(f"http://127.0.0.1:{closed_port()}/x")
    assert fetch(src, tmp_path / "raw", mirrors=None, allow_network=False).read_bytes() == GOOD


def test_bad_mirror_copy_falls_through_to_good_one(tmp_path):
    write_mirror(tmp_path / "bad", BAD)
    write_mirror(tmp_path / "good")
    src = make_source(f"http://127.0.0.1:{closed_port()}/x")
    path = fetch(src, tmp_path / "raw", mirrors=[str(tmp_path / "bad"), str(tmp_path / "good")],
                 allow_network=False)
    assert path.read_bytes() == GOOD


def test_no_mirror_no_network_names_file_url_and_mirror(tmp_path):
    (tmp_path / "mirror").mkdir()
    url = "https://example.org/topics.txt"
    with pytest.raises(DownloadError) as err:
        fetch(make_source(url), tmp_path / "raw", mirrors=[str(tmp_path / "mirror")], allow_network=False)
    msg = str(err.value)
    assert "toy_topics" in msg and str(tmp_path / "raw" / "trec" / "topics.txt") in msg
    assert url in msg
    assert str(tmp_path / "mirror" / "toy" / "topics.txt") in msg
    assert not (tmp_path / "raw" / "trec" / "topics.txt").exists()


def test_bad_mirror_only_reports_checksums(tmp_path):
    write_mirror(tmp_path / "mirror", BAD)
    with pytest.raises(DownloadError) as err:
        fetch(make_source("https://example.org/t"), tmp_path / "raw",
              mirrors=[str(tmp_path / "mirror")], allow_network=False)
    assert sha(GOOD) in str(err.value) and sha(BAD) in str(err.value)
    assert leftovers(tmp_path / "raw" / "trec") == []


def test_md5_pinned_source(tmp_path):
    write_mirror(tmp_path / "mirror")
    src = make_source("https://example.org/t", sha256=None, md5=hashlib.md5(GOOD).hexdigest())
    assert fetch(src, tmp_path / "raw", [str(tmp_path / "mirror")], allow_network=False).exists()
    bad = make_source("https://example.org/t", sha256=None, md5=hashlib.md5(BAD).hexdigest())
    (tmp_path / "raw" / "trec" / "topics.txt").unlink()
    with pytest.raises(DownloadError, match="expected md5"):
        fetch(bad, tmp_path / "raw", [str(tmp_path / "mirror")], allow_network=False)


# --------------------------------------------------------------------------- the real registry


def test_every_mini_source_resolves_from_shared_data(shared_data, tmp_path):
    raw = tmp_path / "raw"
    paths = dl.download_profile("mini", raw, [str(shared_data)], allow_network=False)
    mini = [s for s in load_sources() if "mini" in s.profiles]
    assert len(paths) == len(mini) > 0
    for s in mini:
        assert dl.sha256_file(raw / s.dest) == s.sha256, s.name
    rows = [line.split("\t") for line in (raw / "MANIFEST.tsv").read_text().splitlines()]
    assert rows[0] == ["name", "dest", "sha256"]
    assert {r[0]: r[2] for r in rows[1:]} == {s.name: s.sha256 for s in mini}
    # second run: everything already present, nothing copied
    assert dl.download_profile("mini", raw, [], allow_network=False) == paths


def test_packaged_registry_is_complete():
    sources = {s.name: s for s in load_sources()}
    for name in ("dl19_topics", "dl19_qrels", "dl20_topics", "dl20_qrels", "dl19_bm25_run",
                 "dl20_bm25_run", "dl19_bm25_top100", "dl20_bm25_top100"):
        assert "mini" in sources[name].profiles
    for name in ("dev_topics", "dev_qrels", "msmarco_collection", "tevatron_msmarco_aug_train"):
        assert sources[name].profiles == ("paper",)
    assert sum(n.startswith("syntod_") and {"mini", "paper"} <= set(s.profiles)
               for n, s in sources.items()) == 6
    hf = sources["tevatron_msmarco_aug_train"].hf_dataset
    assert hf.repo_id == "Tevatron/msmarco-passage-aug" and dl._COMMIT.fullmatch(hf.revision)
    assert sources["msmarco_collection"].checksum == ("md5", "87dd01826da3e2ad45447ba5af577628")


# --------------------------------------------------------------------------- validation


def write_yaml(tmp_path: Path, entries: list[dict]) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(yaml.safe_dump({"sources": entries}))
    return p


BASE = {"name": "x", "url": "https://e.org/x", "sha256": "a" * 64, "mirror": "x", "dest": "x",
        "profiles": ["mini"]}


@pytest.mark.parametrize("key", ["name", "url", "sha256", "mirror", "dest", "profiles"])
def test_missing_key_names_entry_and_key(tmp_path, key):
    entry = {k: v for k, v in BASE.items() if k != key}
    with pytest.raises(SourcesError) as err:
        load_sources(write_yaml(tmp_path, [BASE | {"name": "ok", "dest": "ok"}, entry]))
    assert f"'{key}'" in str(err.value) and "#2" in str(err.value)
    if key != "name":
        assert "'x'" in str(err.value)


def test_hf_entry_needs_commit_pin_or_checksum(tmp_path):
    hf = {"name": "t", "mirror": "t", "dest": "t", "profiles": ["paper"],
          "hf_dataset": {"repo_id": "o/n", "revision": "main", "filename": "t.gz"}}
    with pytest.raises(SourcesError, match="checksum"):
        load_sources(write_yaml(tmp_path, [hf]))
    hf["hf_dataset"]["revision"] = "0" * 40
    (s,) = load_sources(write_yaml(tmp_path, [hf]))
    assert s.checksum is None and s.hf_dataset == HFDataset("o/n", "0" * 40, "t.gz")


@pytest.mark.parametrize("bad", [{"sha256": "xyz"}, {"profiles": ["huge"]}, {"dest": "../x"},
                                 {"colour": "red"}])
def test_invalid_values_are_refused(tmp_path, bad):
    with pytest.raises(SourcesError):
        load_sources(write_yaml(tmp_path, [BASE | bad]))


# --------------------------------------------------------------------------- Hugging Face cache


REV = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, data: bytes, blob_name: str | None = None) -> Path:
    """The huggingface_hub cache layout: blobs/<sha256>, snapshots/<rev>/<file> -> blob, refs/main."""
    repo = root / "datasets--Tevatron--msmarco-passage-aug"
    blob = repo / "blobs" / (blob_name or sha(data))
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snap = repo / "snapshots" / REV / "train.jsonl.gz"
    snap.parent.mkdir(parents=True)
    snap.symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return root


def hf_source(revision: str = REV, **kw) -> Source:
    return Source(name="tevatron_train", mirror="tev/train.jsonl.gz", dest="tev/train.jsonl.gz",
                  profiles=("paper",), url="https://huggingface.co/x",
                  hf_dataset=HFDataset("Tevatron/msmarco-passage-aug", revision, "train.jsonl.gz"), **kw)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return cache


def test_hf_dataset_from_local_cache(offline_hub, tmp_path):
    hub_cache(offline_hub, GOOD)
    path = fetch(hf_source(size=len(GOOD)), tmp_path / "raw", mirrors=[], allow_network=True)
    assert path.read_bytes() == GOOD and not path.is_symlink()


def test_hf_dataset_branch_revision_with_pinned_sha(offline_hub, tmp_path):
    hub_cache(offline_hub, GOOD)
    path = fetch(hf_source("main", sha256=sha(GOOD)), tmp_path / "raw", mirrors=[], allow_network=False)
    assert path.read_bytes() == GOOD


def test_hf_dataset_corrupt_cache_blob_is_refused(offline_hub, tmp_path):
    hub_cache(offline_hub, BAD, blob_name=sha(GOOD))  # blob content does not match its LFS oid
    with pytest.raises(DownloadError) as err:
        fetch(hf_source(), tmp_path / "raw", mirrors=[], allow_network=False)
    assert sha(GOOD) in str(err.value) and sha(BAD) in str(err.value)
    assert leftovers(tmp_path / "raw" / "tev") == []


def test_hf_dataset_missing_from_cache(offline_hub, tmp_path):
    offline_hub.mkdir()
    with pytest.raises(DownloadError) as err:
        fetch(hf_source(), tmp_path / "raw", mirrors=[str(tmp_path / "m")], allow_network=True)
    msg = str(err.value)
    assert "tevatron_train" in msg and "Tevatron/msmarco-passage-aug" in msg
    assert str(tmp_path / "m" / "tev" / "train.jsonl.gz") in msg


# --------------------------------------------------------------------------- git blob ids


def git_hash_object(path: Path) -> str:
    """The independent reference: git's own object id of the file."""
    import subprocess

    return subprocess.run(["git", "hash-object", "--no-filters", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_blob_id_is_gits_object_id(shared_data, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert dl.git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's well-known empty blob
    for f in [shared_data / "syntod" / "recipe_seed_test_set.jsonl", shared_data / "syntod" / "recipe_test_llama_v3.jsonl"]:
        assert dl.git_blob_id(f) == git_hash_object(f), f.name


def blob_source(url: str, data: bytes = GOOD, tmp: Path | None = None) -> Source:
    f = tmp / "ref.bin"
    f.write_bytes(data)
    return make_source(url, sha256=None, git_blob=git_hash_object(f))


def test_git_blob_pinned_download_over_http(server, tmp_path):
    server.routes["/corpus.jsonl"] = GOOD
    src = blob_source(server.base + "/corpus.jsonl", GOOD, tmp_path)
    assert src.checksum[0] == "git_blob"
    path = fetch(src, tmp_path / "raw", mirrors=[])
    assert path.read_bytes() == GOOD and server.hits == ["/corpus.jsonl"]
    # wrong bytes from the server: refused, both ids named, nothing left behind
    server.routes["/bad.jsonl"] = BAD
    bad = blob_source(server.base + "/bad.jsonl", GOOD, tmp_path)
    with pytest.raises(DownloadError) as err:
        fetch(bad, tmp_path / "raw2", mirrors=[])
    ref = tmp_path / "bad.bin"
    ref.write_bytes(BAD)
    assert "expected git_blob " + src.git_blob in str(err.value) and git_hash_object(ref) in str(err.value)
    assert leftovers(tmp_path / "raw2" / "trec") == []


def test_git_blob_pinned_mirror_copy_and_bad_mirror(tmp_path):
    write_mirror(tmp_path / "bad", BAD)
    write_mirror(tmp_path / "good")
    src = blob_source(f"http://127.0.0.1:{closed_port()}/x", GOOD, tmp_path)
    path = fetch(src, tmp_path / "raw", mirrors=[str(tmp_path / "bad"), str(tmp_path / "good")], allow_network=False)
    assert path.read_bytes() == GOOD
    # through the registry: the manifest records the sha256 of a git_blob-pinned file
    entry = {"name": "toy", "url": "https://example.org/x", "git_blob": src.git_blob, "mirror": "toy/topics.txt",
             "dest": "toy.txt", "profiles": ["paper"]}
    dl.download_profile("paper", tmp_path / "raw3", [str(tmp_path / "good")], allow_network=False,
                        sources_path=write_yaml(tmp_path, [entry]))
    assert (tmp_path / "raw3" / "MANIFEST.tsv").read_text().splitlines()[1] == f"toy\ttoy.txt\t{sha(GOOD)}"
    with pytest.raises(DownloadError, match="expected git_blob"):
        dl.download_profile("paper", tmp_path / "raw4", [str(tmp_path / "bad")], allow_network=False,
                            sources_path=write_yaml(tmp_path, [entry]))


def test_git_blob_entries_validate(tmp_path):
    entry = {k: v for k, v in BASE.items() if k != "sha256"} | {"git_blob": "b" * 40}
    (s,) = load_sources(write_yaml(tmp_path, [entry]))
    assert s.checksum == ("git_blob", "b" * 40)
    with pytest.raises(SourcesError, match="'git_blob' is not a git_blob hex digest"):
        load_sources(write_yaml(tmp_path, [entry | {"git_blob": "b" * 39}]))


def test_release_training_catalogs_are_paper_sources_pinned_by_git_blob():
    sources = {s.name: s for s in load_sources()}
    expected = {"syntod_recipe_corpus": ("data/recipe/seed/corpus_recipe.jsonl", "b983354f2fa26cc6530a9e1fb328e8f1f5b7b593"),
                "syntod_ecommerce_catalog_4k_final": ("data/ecommerce/seed/4k_final_valid_product_catalog.jsonl",
                                                      "1a8dbcab0411f6e8b9dbc833392a9d3b3c36a7ec"),
                "syntod_ecommerce_catalog_4k": ("data/ecommerce/seed/4k_valid_product_catalog.jsonl",
                                                "d30a7e5642773d3c3bbbf6bc6acce27db35a347f")}
    for name, (path, blob) in expected.items():
        s = sources[name]
        assert s.profiles == ("paper",) and s.checksum == ("git_blob", blob)
        assert s.url == f"https://raw.githubusercontent.com/algoprog/SynTOD/3e44f10535619137a8641cd33036eb6fb3d3417d/{path}"
