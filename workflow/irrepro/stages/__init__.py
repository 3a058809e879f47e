"""The workflow stages: one module per Snakemake rule, named as the rule.

A stage module declares

- ``HELP``: one line for ``irrepro --help``;
- ``ARGS``: its arguments (:class:`irrepro.commands.Arg` specs; the paths it writes are
  :func:`~irrepro.commands.Out`, locked exclusively while it runs);
- ``PARAMS``: the params.yaml keys it reads (a section, or a dotted key);
- ``run(args, params) -> exit code``: a thin call of the library driver.

Its command is the module name with dashes (``rerank_eval`` -> ``irrepro rerank-eval``); the
``figure_<name>`` rules share :mod:`.figure`. Every rule's ``shell:`` calls exactly its stage
(tests/test_stage_registry.py), so Snakemake and DVC run the same code. Adding a stage means
writing its rule and its module here; the CLI picks the module up by itself. Modules whose
name starts with ``_`` hold what several stages share and are not stages.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..commands import Command


def command_name(module: str) -> str:
    return module.replace("_", "-")


def _load() -> dict[str, Command]:
    stages = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        name = command_name(info.name)
        stages[name] = Command(name=name, help=mod.HELP, args=tuple(mod.ARGS), run=mod.run,
                               params=tuple(mod.PARAMS), description=getattr(mod, "DESCRIPTION", None))
    return stages


#: command name -> stage, in name order
STAGES: dict[str, Command] = _load()
