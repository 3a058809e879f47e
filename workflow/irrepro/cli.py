"""Command-line entry point: one sub-command per workflow stage, plus the user's commands and
the developer tools (``irrepro tools <name>``).

Every Snakemake rule and every DVC stage calls exactly one stage command (irrepro.stages,
named as the rule), with the same arguments, so both runners execute identical code. Each
command validates params.yaml first (so a DVC run fails as early and as clearly as a
Snakemake run) and holds the exclusive lock of every output it writes while it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

# Only what handing a job to the run's warm worker needs is imported here: every job of a
# Snakemake run starts this module as a client, and the rest (jsonschema, shtab, the stage
# registry: ~0.2 s) is imported in the worker's child that runs the job, or below without a worker.
from . import __version__, warm_worker

log = logging.getLogger("irrepro")


def _common(p: argparse.ArgumentParser) -> None:
    from .params import DEFAULT_PARAMS, PROFILES

    p.add_argument("--profile", choices=list(PROFILES), help="override params.yaml's profile")
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    p.add_argument("--log", help="also write the log to this file (the rule's log under logs/)")
    p.add_argument("--debug", action="store_true", help="also print an error's traceback (it is always in --log)")


def make_parser() -> argparse.ArgumentParser:
    """The argparse tree of every registered command (stages, user commands, ``tools``)."""
    import shtab

    from .cli_tools import TOOLS
    from .cli_user import START_HERE, USER_COMMANDS
    from .commands import register
    from .stages import STAGES

    ap = argparse.ArgumentParser(prog="irrepro", description=__doc__, epilog=START_HERE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"irrepro {__version__}")
    shtab.add_argument_to(ap, ["--print-completion"], help="print a shell completion script for the given shell")
    sub = ap.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    register(sub, USER_COMMANDS, _common)
    register(sub, STAGES.values(), _common)
    tools = sub.add_parser("tools", help="developer tools: SynTOD checks, LLM endpoint check, DVC bookkeeping, "
                                         "rehearsal helpers")
    register(tools.add_subparsers(dest="tool", metavar="TOOL", required=True), TOOLS, _common, prefix="tools ")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = warm_worker.delegate(argv)  # a Snakemake run's warm worker, when there is one
    if code is not None:
        return code
    from .errors import run_command
    from .utils import setup_logging

    a = make_parser().parse_args(argv)
    a.argv = argv
    setup_logging(a.log)
    # One error path (irrepro.errors): every failure of every command is one line on stderr and
    # in --log, exit 2 for bad input (InputError) and 1 for a failure (FailureError, anything
    # else); the traceback only in --log / --debug.
    return run_command(a.command, _run, a, debug=getattr(a, "debug", False))


def _run(a) -> int:
    from . import provenance, sidecar
    from .params import load_params
    from .progress import progress_logging

    P = load_params(a.params, a.profile)
    log.info("irrepro %s (profile %s)", a.command, P["profile"])
    # timings, host and dates of this job go to its run sidecar beside the log, never into its outputs
    sidecar.start(a.command, a.argv, a.log)
    # git commit, package / Lucene / Java versions, hardware and seeds: the same sidecar (irrepro.provenance)
    provenance.record(P)
    code = 1
    try:
        with progress_logging():  # on a terminal, log lines go above the progress bars (irrepro.progress)
            code = a.spec(a, P)  # holds the lock of every output (irrepro.commands.Command)
        return code
    finally:
        sidecar.finish(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    sys.exit(main())
