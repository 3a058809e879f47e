"""Stage ``published_fetch``: pin the authors' published adapters."""

from __future__ import annotations

import logging

from ..commands import Out

log = logging.getLogger("irrepro")

HELP = "pin the authors' published adapters (revision, base, adapter folders)"
ARGS = (Out("--out", "pin file (JSON)"),)
PARAMS = ("published.adapters",)


def run(a, P) -> int:
    from ..study1.published import pin_published

    doc = pin_published(P["published"]["adapters"], a.out)
    log.info("published adapters: %d repo(s) pinned -> %s", len(doc["adapters"]), a.out)
    return 0
