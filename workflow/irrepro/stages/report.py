"""Stage ``report``: the reproduction report, measured vs reference numbers, OK/FAIL."""

from __future__ import annotations

import logging

from ..commands import In, Out

log = logging.getLogger("irrepro")

HELP = "reproduction report: measured vs reference, OK/FAIL"
ARGS = (
    In("--metrics", nargs="+"),
    In("--checkpoints", "tidy checkpoint table from collect (adds learning curves)", required=False),
    In("--published", "table of the authors' published adapters (published-eval; adds a section)", required=False),
    Out("--out"),
)
# (+ the knobs resources/deviations.yaml names: the report states each deviation that applies)
PARAMS = ("profile", "evaluate.on_fail")


def run(a, P) -> int:
    from ..deviations import load_deviations
    from ..params import route
    from ..report import build_report, count_fails, load_metrics, load_references, write_report

    metrics = load_metrics(a.metrics)
    refs = load_references()
    # the rehearsal is checked against the paper's references (its route), under a banner
    text = build_report(metrics, refs, route(P["profile"]), deviations=load_deviations(params=P))
    if P["profile"] == "rehearsal":
        from ..rehearsal.check import BANNER

        text = BANNER + "\n\n" + text.replace("# Reproduction report (profile: paper)",
                                                 "# Reproduction report (profile: rehearsal = the paper route, sizes "
                                                 "shrunk; checked against the paper's references)", 1)
    if a.checkpoints:
        from ..study1.collect import curves_markdown

        text += "\n" + curves_markdown(a.checkpoints)
    if a.published:
        from ..study1.published import final_markdown, read_table

        text += "\n" + final_markdown(read_table(a.published), P["profile"])
    write_report(text, a.out)
    log.info("report written to %s", a.out)
    fails = count_fails(metrics, refs, route(P["profile"]))
    if fails and P["evaluate"]["on_fail"] == "fail":
        log.error("%d reference number(s) not reproduced; see %s", fails, a.out)
        return 1
    return 0
