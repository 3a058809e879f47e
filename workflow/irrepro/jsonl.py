"""One JSONL reader for the project's line-oriented JSON inputs (passages, training groups,
candidates, predictions), so every one of them names the file and the line of a bad line.

:func:`json_lines` yields ``(line number, object)`` for every non-blank line. A file that
cannot be opened, a line that is not JSON, a line that is not a JSON object (with
``objects=True``) and bytes that do not decode (bad UTF-8, a truncated gzip stream) raise
``error(path, line, message)``: by default :class:`irrepro.errors.InputError`; a caller with its
own error class of the same ``(path, line, message)`` signature (``TrecFormatError``,
``GroupFormatError``) passes it so that its callers keep catching what they catch. The line of
a decoding error is the first line that could not be read (0: the file could not be opened).
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, Callable, Iterator

from .errors import InputError

__all__ = ["json_lines", "input_error"]

PathLike = str | os.PathLike


def input_error(path: PathLike, lineno: int, message: str) -> InputError:
    """The default ``error``: :class:`InputError` naming ``path`` (and ``lineno`` unless 0)."""
    return InputError(message, file=path, line=lineno or None)


def json_lines(path: PathLike, *, error: Callable[[PathLike, int, str], Exception] = input_error,
               objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(lineno, value)`` of every non-blank line of ``path`` (gzip when it ends in ``.gz``);
    see the module docstring for the errors."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        fh = opener(path, "rt", encoding="utf-8")
    except OSError as exc:
        raise error(path, 0, f"cannot read file: {exc.strerror or exc}") from None
    lineno = 0
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno}); "
                                              "expected one JSON object per line") from None
                if objects and not isinstance(value, dict):
                    raise error(path, lineno, f"expected a JSON object, got {type(value).__name__}")
                yield lineno, value
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            raise error(path, lineno + 1, f"cannot decode: {exc}") from exc
