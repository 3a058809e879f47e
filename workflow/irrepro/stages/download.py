"""Stage ``download``: fetch and checksum the profile's raw files."""

from __future__ import annotations

import logging

from ..commands import Out

log = logging.getLogger("irrepro")

HELP = "fetch and checksum the profile's raw files"
ARGS = (Out("--out"),)
PARAMS = ("profile", "data")


def run(a, P) -> int:
    from ..download import download_profile
    from ..params import route

    D = P["data"]
    paths = download_profile(route(P["profile"]), a.out, D["mirrors"], D["allow_network"], timeout=D["timeout_s"],
                             sources_path=D.get("sources"))
    log.info("download: %d files in %s", len(paths), a.out)
    return 0
