"""The project's error family and the one error path every command goes through.

Contract (issue 12): a command that fails prints exactly one line

    irrepro <command>: <file>:<line>: <what> (<hint>)

to stderr and to the rule's ``--log`` file, and exits 2 for bad input (:class:`InputError`,
and the library errors that mean the same: a missing file, a malformed JSON line, a wrong
value) or 1 for a failure while working on good input (:class:`FailureError`, anything
else). The traceback goes to the log file only, and to stderr with ``--debug``. Every line
is passed through :func:`irrepro.secrets.redact` first, so no credential reaches a terminal
or a log through an error message.

Code that knows the file (and line, or key) a problem comes from raises :class:`InputError`
with ``file=``/``line=``/``key=``; a library error caught where the file is known is
re-raised with :func:`reraise_with_file`. ``InputError`` subclasses ``ValueError`` (and
``FailureError`` ``RuntimeError``) so callers that already catch those keep working.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from typing import Any, NoReturn

from .secrets import redact

EXIT_INPUT = 2
EXIT_FAILURE = 1


class IrreproError(Exception):
    """Base of the project's errors: ``what`` happened in ``file`` (at ``line`` or ``key``)."""

    exit_code = EXIT_FAILURE

    def __init__(self, what: str, *, file: str | os.PathLike | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None):
        self.what, self.file, self.line, self.key, self.hint = what, file, line, key, hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{os.fspath(self.file)}:{self.line}: " if self.line is not None else f"{os.fspath(self.file)}: "
        if self.key is not None:
            where += f"{self.key}: "
        return f"{where}{self.what}" + (f" ({self.hint})" if self.hint else "")


class InputError(IrreproError, ValueError):
    """Bad input (a file, a line of it, a key, an argument): exit code 2."""

    exit_code = EXIT_INPUT


class FailureError(IrreproError, RuntimeError):
    """Good input, but the work failed (a lock held, a server down, a NaN): exit code 1."""

    exit_code = EXIT_FAILURE


class LockedError(FailureError):
    """Another job holds the exclusive lock on an output."""


# Library exceptions that mean "the input is bad" (exit 2); anything else is a failure (exit 1).
_INPUT_TYPES: tuple[type[BaseException], ...] = (ValueError, KeyError, LookupError, FileNotFoundError,
                                                 NotADirectoryError, IsADirectoryError, UnicodeDecodeError)


def _input_types() -> tuple[type[BaseException], ...]:
    extra: list[type[BaseException]] = []
    try:  # a malformed YAML file is bad input wherever it is read
        import yaml

        extra.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml is a dependency
        pass
    return _INPUT_TYPES + tuple(extra)


def _flat(text: str) -> str:
    """Multi-line messages (schema errors list one problem per line) as one line."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    if len(parts) > 1 and parts[0].endswith(":"):
        return parts[0] + " " + "; ".join(parts[1:])
    return "; ".join(parts)


def classify(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message without the command prefix)`` of an exception."""
    if isinstance(exc, IrreproError):
        return exc.exit_code, _flat(exc.one_line())
    if isinstance(exc, json.JSONDecodeError):
        return EXIT_INPUT, f"<unknown file>:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        code = EXIT_INPUT if isinstance(exc, _INPUT_TYPES) else EXIT_FAILURE
        return code, f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, KeyError):
        return EXIT_INPUT, f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, SystemExit):
        return (exc.code if isinstance(exc.code, int) else EXIT_INPUT), _flat(str(exc.code or ""))
    text = _flat(str(exc)) or type(exc).__name__
    if isinstance(exc, _input_types()):
        return EXIT_INPUT, text
    if type(exc).__module__.startswith("irrepro"):  # our own messages already say what happened
        return EXIT_FAILURE, text
    return EXIT_FAILURE, f"{type(exc).__name__}: {text}"


def reraise_with_file(exc: BaseException, file: str | os.PathLike, line: int | None = None,
                      what: str | None = None, hint: str | None = None) -> NoReturn:
    """Re-raise a library error as :class:`InputError` naming ``file`` (and ``line``)."""
    if isinstance(exc, json.JSONDecodeError):
        what = what or f"not valid JSON: {exc.msg} (column {exc.colno})"
        line = line if line is not None else exc.lineno
    raise InputError(what or f"{type(exc).__name__}: {_flat(str(exc))}", file=file, line=line, hint=hint) from exc


def read_json_file(path: str | os.PathLike) -> Any:
    """``json.load`` of ``path``; a missing or malformed file is an :class:`InputError` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError("not found", file=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reraise_with_file(exc, path)


def iter_jsonl(path: str | os.PathLike, what: str = "record"):
    """``(line number, object)`` of every non-blank line of a JSONL file; a malformed line is an
    :class:`InputError` naming the file and the line (never 'line 1 column 1' of nothing)."""
    try:
        fh = open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("not found", file=path) from None
    with fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                yield n, json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"not a JSON {what}: {exc.msg} (column {exc.colno})", file=path, line=n) from None


def report_error(command: str, exc: BaseException, *, debug: bool = False) -> int:
    """Write the one-line error (stderr + every log file handler) and the traceback (log files;
    stderr too with ``debug``); return the exit code."""
    code, message = classify(exc)
    line = redact(f"irrepro {command}: {message}")
    tb = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    root = logging.getLogger()
    record = logging.LogRecord("irrepro", logging.ERROR, __file__, 0, "%s", (line,), None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.acquire()
            try:
                handler.stream.write(tb)
                handler.flush()
            finally:
                handler.release()
    sys.stderr.write(line + "\n")
    if debug:
        sys.stderr.write(tb)
    sys.stderr.flush()
    return code


def run_command(command: str, func, *args, debug: bool = False) -> int:
    """Run a command handler; map whatever it raises to the one error path."""
    try:
        code = func(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the single place every error is reported
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0
        return report_error(command, exc, debug=debug)
    return int(code or 0)
