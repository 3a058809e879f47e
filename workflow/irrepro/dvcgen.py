"""dvc.yaml, generated from the Snakemake rules: the rules are the one declaration of the DAG.

    python -m irrepro.dvcgen [--check]      (writes dvc.yaml; --check: exit 1 if it is stale)

The rules (``workflow/rules/*.smk``) are loaded through ``snakemake.api`` and walked rule by rule
(not job by job), so each DVC stage is the rule with its file patterns templated:

- a wildcard becomes ``${item}`` (one wildcard: ``foreach``) or ``${item.<name>}`` (several:
  ``matrix``) over the params list the rule declares with ``dvc_over(rule, wildcard="key")``;
- the profile's directory in every path becomes ``${profile}`` (the rules are loaded for each
  profile and must give the same text: a path naming the profile anywhere else is refused);
- ``cmd`` is the rule's ``shell:`` formatted with the templated input, output, log, params and
  wildcards; ``deps`` the inputs (``in_dir(...)``: DVC depends on their directory, a stage
  reading every config's output cannot list them); ``outs`` the outputs, except those marked
  ``metric(...)`` or ``plot(..., **props)``; ``params`` the ``profile`` param and every key named
  with ``keys(...)``; ``desc`` the rule's docstring.

The markers live here so that the rules (``common.smk``) and the generator share them.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
from pathlib import Path

import yaml

METRIC = "dvc_metric"
PLOT = "dvc_plot"
IN_DIR = "dvc_in_dir"
# Shown at the top of dvc.yaml: why the file looks the way it does.
HEADER = """\
# GENERATED from the Snakemake rules (workflow/rules/*.smk) by `python -m irrepro.dvcgen`
# (workflow/irrepro/dvcgen.py). Do not edit: change the rule and regenerate. The test
# tests/test_dvcgen.py fails when this file is stale; tests/test_dag_agreement.py checks that
# every Snakemake job is one expanded stage here. Paths carry the profile from params.yaml, so
# `dvc exp run -S profile=paper` runs the paper scale.
#
# plot_data comes first on purpose (its rule file is included first): `dvc exp show` lists metrics
# in stage order, so the handful of headline numbers in summary.json come before the ~150 columns
# of the other metrics files. Plot templates: .dvc/plots/ (lines_by_config: one panel per family,
# one line per rank/module set, revisions dashed apart).
# finetune and ablate depend on their knobs, not on the grid lists: a new rank or config must not
# retrain or rerun the others.
"""


class ParamKeys(dict):
    """``{dotted params key: value}``: Snakemake compares the values, DVC lists the keys."""


def keys(P: dict, *names: str) -> ParamKeys:
    """The values of params keys (``"finetune.passage_max_len"``, ``"rerank"``) for a rule's params."""
    out = ParamKeys()
    for name in names:
        value = P
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"params key {name!r}: params.yaml has no {part!r} there")
            value = value[part]
        out[name] = value
    return out


def metric(path):
    """An output DVC lists under ``metrics``."""
    from snakemake.io import flag

    return flag(path, METRIC)


def plot(path, **props):
    """An output DVC lists under ``plots`` (with ``template``, ``x``, ``y``, ``title``... if given)."""
    from snakemake.io import flag

    return flag(path, PLOT, props)


def in_dir(paths):
    """Inputs DVC depends on through their directory (one stage reads every config's output)."""
    from snakemake.io import flag

    return flag(paths, IN_DIR)


class DvcGenError(Exception):
    """A rule that cannot be written as a DVC stage (the message names the rule)."""


def _call(fn, **available):
    """A params function called like Snakemake does: arguments by name (the first is wildcards)."""
    names = list(inspect.signature(fn).parameters)
    args = {n: available[n] for n in names[1:]}
    return fn(available["wildcards"], **args)


def _templated_list(source, values):
    from snakemake.iocontainers import Namedlist

    out = Namedlist()
    out.extend(values)
    out._take_names(source._get_names())
    return out


def _stage(rule, globals_: dict, profile: str) -> dict:
    from snakemake.io import apply_wildcards, is_flagged
    from snakemake.iocontainers import Wildcards

    over = globals_.get("DVC_OVER", {}).get(rule.name, {})
    if set(over) != set(rule.wildcard_names):
        raise DvcGenError(f"rule {rule.name}: wildcards {sorted(rule.wildcard_names)} but dvc_over declares "
                          f"{sorted(over)} (common.smk: dvc_over(rule, wildcard='params.list.key'))")
    item = {w: "${item}" if len(over) == 1 else f"${{item.{w}}}" for w in over}
    profile_dir = re.compile(rf"(?<=/){re.escape(profile)}(?=/|$|\s)")

    def templ(text: str) -> str:
        return profile_dir.sub("${profile}", apply_wildcards(str(text), item))

    inputs = _templated_list(rule.input, [templ(f) for f in rule.input])
    outputs = _templated_list(rule.output, [templ(f) for f in rule.output])
    logs = _templated_list(rule.log, [templ(f) for f in rule.log])
    wildcards = Wildcards(fromdict=item)
    params_values, param_keys = [], []
    for name, value in rule.params.items():
        if callable(value):  # computed from the templated files
            value = _call(value, wildcards=wildcards, input=inputs, output=outputs,
                          threads=rule.resources.get("_cores"), resources=None)
        elif isinstance(value, ParamKeys):
            param_keys += list(value)
        elif name == "profile":
            if value != profile:
                raise DvcGenError(f"rule {rule.name}: params.profile is {value!r}, not the profile {profile!r}")
            value, param_keys = "${profile}", ["profile", *param_keys]
        elif isinstance(value, str):
            value = templ(value)
        else:
            raise DvcGenError(f"rule {rule.name}: param {name!r} is a value of params.yaml, not named: "
                              "declare it with keys('section.key', ...) so that DVC lists the key")
        params_values.append(value)
    params = _templated_list(rule.params, params_values)
    from snakemake.utils import format as smk_format

    cmd = smk_format(rule.shellcmd, input=inputs, output=outputs, params=params, wildcards=wildcards,
                     log=logs, threads=rule.resources.get("_cores"))
    deps = []
    for src, path in zip(rule.input, inputs):
        dep = os.path.dirname(path) if is_flagged(src, IN_DIR) else path
        if dep not in deps:
            deps.append(dep)
    outs, metrics, plots = [], [], []
    for src, path in zip(rule.output, outputs):
        if is_flagged(src, METRIC):
            metrics.append(path)
        elif PLOT in getattr(src, "flags", {}):  # is_flagged() is false for a plot without properties
            props = src.flags[PLOT]
            plots.append({path: dict(props)} if props else path)
        else:
            outs.append(path)
    body = {"cmd": cmd, "deps": deps, "params": param_keys, "outs": outs, "metrics": metrics, "plots": plots}
    body = {k: v for k, v in body.items() if v}
    stage = {}
    if rule.docstring:
        stage["desc"] = " ".join(rule.docstring.split())
    if len(over) == 1:
        (key,) = over.values()
        return {**stage, "foreach": f"${{{key}}}", "do": body}
    if over:
        stage["matrix"] = {w: f"${{{key}}}" for w, key in over.items()}
    return {**stage, **body}


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, like a hand-written dvc.yaml."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def render(workflow, profile: str) -> str:
    """dvc.yaml text of a loaded Snakemake workflow (its rules for ``profile``)."""
    skip = set(workflow.globals.get("SNAKEMAKE_ONLY", ())) | {"all"}
    stages = {rule.name: _stage(rule, workflow.globals, profile) for rule in workflow.rules if rule.name not in skip}
    text = yaml.dump({"stages": stages}, Dumper=_Dumper, sort_keys=False, width=10**6, allow_unicode=True)
    # a blank line between stages
    text = re.sub(r"\n(  [A-Za-z_][\w-]*:\n)", r"\n\n\1", text).replace("stages:\n\n", "stages:\n", 1)
    return HEADER + text


def load_and_render(workdir: Path, profile: str) -> str:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf_api = api.workflow(snakefile=Path(workdir) / "Snakefile", workdir=Path(workdir),
                              resource_settings=ResourceSettings(cores=1),
                              config_settings=ConfigSettings(config={"profile": profile}),
                              storage_settings=StorageSettings())
        return render(wf_api._workflow, profile)


def generate(workdir: str | Path = ".", profiles: tuple[str, ...] = ("mini", "paper")) -> str:
    """dvc.yaml for the workflow in ``workdir``: the same text from the rules of every profile."""
    texts = {p: load_and_render(Path(workdir).resolve(), p) for p in profiles}
    first, *rest = profiles
    for p in rest:
        if texts[p] != texts[first]:
            diff = "\n".join(list(difflib.unified_diff(texts[first].splitlines(), texts[p].splitlines(), first, p,
                                                       lineterm=""))[:20])
            raise DvcGenError(f"the rules give a different dvc.yaml for profiles {first} and {p} (a rule whose "
                              f"files or command differ by profile other than its directory):\n{diff}")
    return texts[first]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m irrepro.dvcgen", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the file instead of writing; exit 1 if stale")
    ap.add_argument("--workdir", default=".", help="project root (Snakefile, params.yaml)")
    ap.add_argument("--out", default="dvc.yaml", help="relative to --workdir")
    a = ap.parse_args(argv)
    out = Path(a.workdir) / a.out
    text = generate(a.workdir)
    if a.check:
        old = out.read_text() if out.exists() else ""
        if old != text:
            sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(out),
                                                       "generated"))
            print(f"{out} is stale: run `python -m irrepro.dvcgen` and commit the result", file=sys.stderr)
            return 1
        print(f"{out} is up to date with the Snakemake rules", file=sys.stderr)
        return 0
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # the rules' ParamKeys is irrepro.dvcgen's, not __main__'s
    from irrepro.dvcgen import main as _main

    sys.exit(_main())
