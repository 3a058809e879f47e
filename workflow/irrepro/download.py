"""Fetch the project's raw files: pinned URL + checksum, local mirrors first.

Every file is described once in ``resources/sources.yaml``. :func:`fetch` gets one file
into ``dest_root/dest``: an existing file with the right checksum is kept; otherwise each
mirror directory is tried (a plain copy), then the network (``requests`` with retries, or
``huggingface_hub`` for ``hf_dataset`` entries). Bytes always land in a temporary file next
to the destination and are moved into place only after verification, so a failed or
interrupted fetch never leaves a partial or unverified file at ``dest``.

Mirror directories: the ``mirrors`` argument plus ``$IRREPRO_DATA_MIRROR``
(``os.pathsep``-separated); relative paths are resolved against the working directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


from .yamlio import load_yaml

from irrepro.utils import atomic_path, sha256_file
from irrepro.vocab import ROUTES

log = logging.getLogger("irrepro.download")

SOURCES_YAML = Path(__file__).resolve().parent / "resources" / "sources.yaml"
MIRROR_ENV = "IRREPRO_DATA_MIRROR"
PROFILES = ROUTES  # sources.yaml names the code routes that need a file
MANIFEST = "MANIFEST.tsv"

RETRIES = 4  # network attempts per URL
BACKOFF = 2.0  # seconds; doubled after each failed attempt
PROGRESS_MIN_BYTES = 20 << 20  # show a progress bar above this size
CHUNK = 1 << 20

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}"),
        "git_blob": re.compile(r"[0-9a-f]{40}")}
# Checksum kinds in order of preference. `git_blob` is git's object id of the file's bytes,
# sha1(b"blob <size>\0" + bytes): what a GitHub tree listing publishes for every file, so a
# file of a pinned commit can be verified when nobody published its sha256.
CHECKSUM_KINDS = ("sha256", "md5", "git_blob")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REQUIRED = ("name", "mirror", "dest", "profiles")
_OPTIONAL = ("url", "sha256", "md5", "git_blob", "size", "hf_dataset")
_HF_KEYS = ("repo_id", "revision", "filename")


class DownloadError(RuntimeError):
    """A file could not be obtained (or verified) from any mirror or from the network."""


class SourcesError(ValueError):
    """sources.yaml is malformed."""


@dataclass(frozen=True)
class HFDataset:
    repo_id: str
    revision: str
    filename: str


@dataclass(frozen=True)
class Source:
    name: str
    mirror: str
    dest: str
    profiles: tuple[str, ...]
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None
    git_blob: str | None = None
    size: int | None = None
    hf_dataset: HFDataset | None = field(default=None)

    @property
    def checksum(self) -> tuple[str, str] | None:
        """(algorithm, hex digest) of the pinned checksum, in :data:`CHECKSUM_KINDS` order."""
        for algo in CHECKSUM_KINDS:
            if getattr(self, algo):
                return algo, getattr(self, algo)
        return None


# --------------------------------------------------------------------------- registry


def _rel_path(value: object, where: str, key: str) -> str:
    p = PurePosixPath(str(value))
    if not str(value) or p.is_absolute() or ".." in p.parts:
        raise SourcesError(f"{where}: {key!r} must be a relative path without '..', got {value!r}")
    return str(p)


def _parse_entry(i: int, raw: object) -> Source:
    if not isinstance(raw, dict):
        raise SourcesError(f"sources entry #{i}: expected a mapping, got {type(raw).__name__}")
    where = f"sources entry #{i} ({raw['name']!r})" if "name" in raw else f"sources entry #{i}"
    for key in _REQUIRED:
        if key not in raw or raw[key] in (None, "", []):
            raise SourcesError(f"{where}: missing key {key!r}")
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise SourcesError(f"{where}: unknown key(s) {sorted(unknown)}")
    if not raw.get("url") and not raw.get("hf_dataset"):
        raise SourcesError(f"{where}: missing key 'url' (or 'hf_dataset')")

    profiles = raw["profiles"]
    if isinstance(profiles, str) or not set(profiles) <= set(PROFILES):
        raise SourcesError(f"{where}: 'profiles' must be a list drawn from {PROFILES}, got {profiles!r}")

    sums = {}
    for algo in CHECKSUM_KINDS:
        if raw.get(algo) is not None:
            value = str(raw[algo]).lower()
            if not _HEX[algo].fullmatch(value):
                raise SourcesError(f"{where}: {algo!r} is not a {algo} hex digest: {raw[algo]!r}")
            sums[algo] = value

    hf = None
    if raw.get("hf_dataset") is not None:
        spec = raw["hf_dataset"]
        if not isinstance(spec, dict):
            raise SourcesError(f"{where}: 'hf_dataset' must be a mapping")
        for key in _HF_KEYS:
            if not spec.get(key):
                raise SourcesError(f"{where}: missing key 'hf_dataset.{key}'")
        hf = HFDataset(str(spec["repo_id"]), str(spec["revision"]), str(spec["filename"]))

    if not sums and not (hf and _COMMIT.fullmatch(hf.revision)):
        raise SourcesError(
            f"{where}: missing key 'sha256' (no checksum pinned: give sha256, or md5 / git_blob where no "
            "sha256 is published; only an hf_dataset pinned to a 40-hex commit may go without one)"
        )
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise SourcesError(f"{where}: 'size' must be a non-negative integer, got {size!r}")

    return Source(
        name=str(raw["name"]),
        mirror=_rel_path(raw["mirror"], where, "mirror"),
        dest=_rel_path(raw["dest"], where, "dest"),
        profiles=tuple(profiles),
        url=raw.get("url"),
        sha256=sums.get("sha256"),
        md5=sums.get("md5"),
        git_blob=sums.get("git_blob"),
        size=size,
        hf_dataset=hf,
    )


def load_sources(path: str | os.PathLike | None = None) -> list[Source]:
    """Read and validate the source registry (default: the packaged sources.yaml)."""
    path = Path(path) if path else SOURCES_YAML
    data = load_yaml(path) or {}
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SourcesError(f"{path}: expected a top-level 'sources:' list")
    sources = [_parse_entry(i, raw) for i, raw in enumerate(entries, 1)]
    for key in ("name", "dest"):
        seen: set[str] = set()
        for s in sources:
            value = getattr(s, key)
            if value in seen:
                raise SourcesError(f"{path}: duplicate {key} {value!r}")
            seen.add(value)
    return sources


# --------------------------------------------------------------------------- helpers


def mirror_dirs(mirrors: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """Mirror roots: the given ones, then $IRREPRO_DATA_MIRROR; absolute, de-duplicated."""
    raw = list(mirrors or []) + [m for m in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if m]
    out: list[Path] = []
    for m in raw:
        p = Path(os.path.abspath(os.path.expanduser(m)))
        if p not in out:
            out.append(p)
    return out


def git_blob_id(path: str | os.PathLike) -> str:
    """Git's object id of the file's bytes: sha1(b"blob <size>\\0" + bytes), hex."""
    h = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _digest(path: Path, algo: str) -> str:
    if algo == "sha256":
        return sha256_file(path)
    if algo == "git_blob":
        return git_blob_id(path)
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _problem(source: Source, path: Path, expected_sha256: str | None = None) -> str | None:
    """Why ``path`` is not a correct copy of ``source`` (None if it is)."""
    if source.size is not None and path.stat().st_size != source.size:
        return f"size mismatch: expected {source.size} bytes, got {path.stat().st_size}"
    checks = [source.checksum] if source.checksum else []
    if expected_sha256 and expected_sha256 != source.sha256:
        checks.append(("sha256", expected_sha256))
    for algo, expected in checks:
        actual = _digest(path, algo)
        if actual != expected:
            return f"checksum mismatch: expected {algo} {expected}, actual {algo} {actual}"
    return None


def _verified(source: Source, tmp: Path, origin: str, expected_sha256: str | None = None) -> None:
    problem = _problem(source, tmp, expected_sha256)
    if problem:
        raise DownloadError(f"{problem} (bytes from {origin})")


def _http_get(url: str, out: Path, timeout: float, label: str) -> None:
    """Stream ``url`` into ``out`` with retries; raise DownloadError on failure."""
    import requests
    from tqdm import tqdm

    delay = BACKOFF
    for attempt in range(1, RETRIES + 1):
        try:
            with requests.get(
                url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}
            ) as resp:
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise DownloadError(f"HTTP {resp.status_code} {resp.reason}")
                resp.raise_for_status()
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                written = 0
                with open(out, "wb") as fh, tqdm(
                    total=total, unit="B", unit_scale=True, desc=label,
                    disable=total is None or total < PROGRESS_MIN_BYTES, mininterval=2.0,
                ) as bar:
                    for block in resp.iter_content(CHUNK):
                        fh.write(block)
                        written += len(block)
                        bar.update(len(block))
                if total is not None and not resp.headers.get("Content-Encoding") and written != total:
                    raise requests.exceptions.ChunkedEncodingError(
                        f"incomplete body: got {written} of {total} bytes"
                    )
                return
        except DownloadError:
            raise
        except requests.RequestException as exc:
            if attempt == RETRIES:
                raise DownloadError(f"{type(exc).__name__}: {exc} (after {RETRIES} attempts)") from exc
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.0fs", url, attempt, RETRIES, exc, delay)
            time.sleep(delay)
            delay *= 2


def _hf_get(spec: HFDataset, out: Path, allow_network: bool) -> tuple[str, str | None]:
    """Copy the hub file into ``out``; return (origin, sha256 implied by the cache blob name)."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        cached = hf_hub_download(
            spec.repo_id,
            spec.filename,
            repo_type="dataset",
            revision=spec.revision,
            token=os.environ.get("HF_TOKEN"),  # from the environment only; never logged
            cache_dir=os.environ.get("HF_HUB_CACHE"),
            local_files_only=offline or not allow_network,
        )
    except Exception as exc:  # hub errors are many; report them all the same way
        mode = "local cache only" if offline or not allow_network else "hub"
        raise DownloadError(f"{type(exc).__name__} ({mode}): {exc}") from exc
    blob = Path(cached).resolve()
    shutil.copyfile(blob, out)
    # LFS blobs are stored under their sha256 (the etag) in the hub cache: check against it.
    expected = blob.name if _HEX["sha256"].fullmatch(blob.name) else None
    return f"hf://datasets/{spec.repo_id}@{spec.revision}/{spec.filename} ({cached})", expected


# --------------------------------------------------------------------------- fetching


def _fetch(source: Source, dest_root, mirrors, allow_network: bool, timeout: float) -> tuple[Path, str]:
    dest = Path(dest_root) / source.dest
    if dest.is_file():
        problem = _problem(source, dest)
        if problem is None:
            log.info("%s: %s already present and verified", source.name, dest)
            return dest, "present"
        log.warning("%s: existing %s is wrong (%s); fetching it again", source.name, dest, problem)

    failures: list[str] = []
    for root in mirror_dirs(mirrors):
        candidate = root / source.mirror
        if not candidate.is_file():
            failures.append(f"mirror {candidate}: not found")
            continue
        try:
            with atomic_path(dest) as tmp:
                shutil.copyfile(candidate, tmp)
                _verified(source, tmp, f"mirror {candidate}")
        except (DownloadError, OSError) as exc:
            failures.append(f"mirror {candidate}: {exc}")
            log.warning("%s: %s", source.name, failures[-1])
            continue
        log.info("%s: copied from mirror %s", source.name, candidate)
        return dest, "mirror"

    remote = (
        f"hf://datasets/{source.hf_dataset.repo_id}@{source.hf_dataset.revision}/{source.hf_dataset.filename}"
        if source.hf_dataset else source.url
    )
    if source.hf_dataset is not None:  # the hub cache works offline, so always try it
        try:
            with atomic_path(dest) as tmp:
                origin, blob_sha = _hf_get(source.hf_dataset, tmp, allow_network)
                _verified(source, tmp, origin, blob_sha)
            log.info("%s: fetched %s", source.name, origin)
            return dest, "hub"
        except (DownloadError, OSError) as exc:
            failures.append(f"{remote}: {exc}")
    elif not allow_network:
        failures.append(f"{remote}: not tried (network disabled)")
    else:
        log.info("%s: downloading %s", source.name, source.url)
        try:
            with atomic_path(dest) as tmp:
                _http_get(source.url, tmp, timeout, source.name)
                _verified(source, tmp, f"URL {source.url}")
            log.info("%s: downloaded %s", source.name, source.url)
            return dest, "network"
        except (DownloadError, OSError) as exc:
            failures.append(f"URL {source.url}: {exc}")

    if not mirror_dirs(mirrors):
        failures.insert(0, f"no mirror directory given (argument or ${MIRROR_ENV})")
    raise DownloadError(
        f"could not fetch {source.name!r} -> {dest} (url: {source.url}):\n  - " + "\n  - ".join(failures)
    )


def fetch(
    source: Source,
    dest_root: str | os.PathLike,
    mirrors: list[str] | None = None,
    allow_network: bool = True,
    timeout: float = 60,
) -> Path:
    """Make ``dest_root/source.dest`` a verified copy of ``source``; return its path.

    Order: existing verified file, each mirror root (``root/source.mirror``), then the
    network (URL, or the Hugging Face Hub / its local cache for ``hf_dataset`` sources).
    Raises :class:`DownloadError` naming the file, URL and every mirror path tried.
    """
    return _fetch(source, dest_root, mirrors, allow_network, timeout)[0]


def _write_manifest(dest_root: Path, rows: list[tuple[str, str, str]]) -> Path:
    path = dest_root / MANIFEST
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("name\tdest\tsha256\n")
            fh.writelines(f"{n}\t{d}\t{s}\n" for n, d, s in rows)
    return path


def download_profile(
    profile: str,
    dest_root: str | os.PathLike,
    mirrors: list[str] | None = None,
    allow_network: bool = True,
    timeout: float = 60,
    sources_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Fetch every source of ``profile`` into ``dest_root`` and write ``MANIFEST.tsv``.

    All sources are attempted; if any fail, one DownloadError lists every failure and no
    manifest is written.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    dest_root = Path(dest_root)
    sources = [s for s in load_sources(sources_path) if profile in s.profiles]
    roots = mirror_dirs(mirrors)
    log.info(
        "profile %s: %d sources -> %s (mirrors: %s; network %s)", profile, len(sources), dest_root,
        ", ".join(map(str, roots)) or "none", "allowed" if allow_network else "disabled",
    )
    paths, rows, errors, counts = [], [], [], {}
    for s in sources:
        try:
            path, how = _fetch(s, dest_root, mirrors, allow_network, timeout)
        except DownloadError as exc:
            errors.append(str(exc))
            continue
        counts[how] = counts.get(how, 0) + 1
        paths.append(path)
        rows.append((s.name, s.dest, s.sha256 or sha256_file(path)))
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
    if errors:
        log.error("profile %s: %d of %d sources failed (%s ok)", profile, len(errors), len(sources), summary)
        raise DownloadError(f"{len(errors)} of {len(sources)} sources failed:\n" + "\n".join(errors))
    manifest = _write_manifest(dest_root, rows)
    log.info("profile %s: %d sources ok (%s); wrote %s", profile, len(paths), summary, manifest)
    return paths
