"""Progress for long loops: a tqdm bar on a terminal, rate-limited log lines everywhere else.

:func:`progress` wraps an iterable (or a manual ``update()`` counter) in a ``tqdm``:

* **stderr is a TTY**: an ordinary bar on stderr. Log records emitted meanwhile go through
  ``tqdm.contrib.logging.logging_redirect_tqdm`` (done by :func:`progress_logging`, which the
  CLI enters once), so a log line never tears the bar apart.
* **stderr is not a TTY** (Snakemake / DVC jobs, CI, a file): no bar characters and no ``\\r``.
  The bar's text is written as an ordinary INFO log record of the ``irrepro.progress`` logger
  at most every ``IRREPRO_PROGRESS_INTERVAL`` seconds (default 30) plus once at the end, so a
  rule's log under ``logs/`` shows ``scoring dl19: 1200/4300 pairs [00:41<01:46, 29.1pairs/s]``
  lines instead of nothing for minutes. A loop that ends within the first interval logs
  nothing (tqdm's ``delay``): short stages stay as quiet as before.

``IRREPRO_PROGRESS=0`` switches progress off (the loop runs unchanged). Progress never
changes what a loop computes: it only counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterable, Iterator, TypeVar

log = logging.getLogger("irrepro.progress")

__all__ = ["progress", "progress_logging", "enabled", "interval_s"]

T = TypeVar("T")
_FALSY = {"0", "false", "no", "off"}


def enabled() -> bool:
    """False when ``IRREPRO_PROGRESS`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("IRREPRO_PROGRESS", "1").strip().lower() not in _FALSY


def interval_s() -> float:
    """Seconds between two progress log lines when stderr is not a terminal."""
    raw = os.environ.get("IRREPRO_PROGRESS_INTERVAL", "30")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"IRREPRO_PROGRESS_INTERVAL must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"IRREPRO_PROGRESS_INTERVAL must be >= 0, got {raw!r}")
    return value


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _LogLines:
    """A file-like sink for tqdm that turns each refresh into one log record (no ``\\r``)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._last = ""

    def write(self, text: str) -> int:
        line = text.strip("\r\n\x1b[A ")
        count = line.split(" [", 1)[0]
        if line and count != self._last:  # the closing refresh repeats the last count (with a new rate)
            self.logger.info("%s", line)
            self._last = count
        return len(text)

    def flush(self) -> None:
        pass


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             logger: logging.Logger | None = None):
    """A ``tqdm`` over ``iterable`` (or a counter to ``update()`` when ``iterable`` is None).

    On a terminal: a bar on stderr. Otherwise: a log line (``logger``, default
    ``irrepro.progress``) at most every :func:`interval_s` seconds and one at the end.
    Disabled (``IRREPRO_PROGRESS=0``): a tqdm that prints nothing. Use as an iterator or as a
    context manager (``with progress(total=n, desc=...) as bar: bar.update(k)``).
    """
    from tqdm import tqdm

    if not enabled():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if _stderr_is_tty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    every = interval_s()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=_LogLines(logger or log), ascii=True,
                ncols=100, mininterval=every, maxinterval=max(every, 1.0), miniters=1, delay=every,
                bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"
                if total is not None or hasattr(iterable, "__len__")
                else "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}]")


@contextlib.contextmanager
def progress_logging() -> Iterator[None]:
    """Route logging through ``tqdm.write`` while inside (only on a terminal, where bars are drawn)."""
    if not (enabled() and _stderr_is_tty()):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield
