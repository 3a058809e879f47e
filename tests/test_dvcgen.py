"""dvc.yaml is generated from the Snakemake rules (irrepro.dvcgen); each rule's code deps cover
what its modules import.

The generated text is compared with the committed file (the ``--check`` of
notebooks/make_notebooks.py); rules the generator cannot translate are refused naming the rule.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from irrepro import dvcgen

PKG = "workflow/irrepro"
# Modules every stage uses through the CLI and that say nothing about what a stage computes
# (errors, logging, locking, file helpers, params loading and validation, the enumerations,
# the provenance sidecar, progress lines, YAML reading, JSON lines read with json.loads or refused
# naming file and line): listing them in every rule would make
# a change to, say, a log line rerun the whole DAG.
INFRASTRUCTURE = {
    "__init__.py", "__main__.py", "errors.py", "utils.py", "params.py", "param_sections.py", "vocab.py", "jsonl.py",
    "progress.py", "sidecar.py", "locking.py", "yamlio.py", "commands.py", "fingerprint.py", "secrets.py",
    "provenance.py", "checks.py", "rundir.py",
}


@pytest.fixture
def project(root, tmp_path):
    """The workflow definition files in a scratch dir (rules may be edited there)."""
    for name in ("Snakefile", "dvc.yaml", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "envs", tmp_path / "envs")
    shutil.copytree(root / "notebooks", tmp_path / "notebooks")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} not found once"
    path.write_text(text.replace(old, new))


def test_committed_dvc_yaml_is_generated_from_the_rules(root):
    generated = dvcgen.generate(root)
    assert (root / "dvc.yaml").read_text() == generated, (
        "dvc.yaml is stale: run `python -m irrepro.dvcgen` (after editing workflow/rules/*.smk) and commit it")


def test_a_rule_change_makes_the_committed_file_stale(project):
    rule = project / "workflow/rules/bm25.smk"
    edit(rule, 'knobs=keys("bm25.threads")', 'knobs=keys("bm25.threads", "bm25.k1")')
    assert dvcgen.main(["--check", "--workdir", str(project)]) == 1
    stages = yaml.safe_load(dvcgen.generate(project))["stages"]
    assert stages["index"]["params"] == ["profile", "bm25.threads", "bm25.k1"]
    assert dvcgen.main(["--workdir", str(project)]) == 0
    assert dvcgen.main(["--check", "--workdir", str(project)]) == 0


def test_generated_stage_shapes(root):
    """foreach for one wildcard, matrix for several, metrics/plots split from outs, desc, in_dir deps."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert list(stages)[0] == "plot_data", "plot_data first: dvc exp show lists summary.json's numbers first"
    assert "report_pages" not in stages
    assert stages["base"]["foreach"] == "${finetune.families}"
    assert "${item}" in stages["base"]["do"]["cmd"]
    assert stages["ablate"]["matrix"] == {"family": "${ablate.families}", "rank": "${ablate.ranks}",
                                          "targets": "${ablate.targets}"}
    assert stages["collect"]["metrics"] == ["results/${profile}/metrics/rerank.json"]
    assert "runs/${profile}/rerank" in stages["collect"]["deps"]
    assert stages["collect"]["plots"][0]["results/${profile}/plots/rerank_final.csv"]["x"] == "ndcg@10"
    assert stages["rerank_eval"]["desc"].startswith("every checkpoint on rerank.checkpoint_datasets")
    assert stages["figure_checkpoint_curves"]["plots"] == ["results/${profile}/figures/checkpoint_curves.png"]


@pytest.mark.parametrize("rule_file, old, new, message", [
    ("data.smk", 'knobs=keys("data")', 'data=P["data"]', "rule download: param 'data' is a value of params.yaml"),
    ("rerank.smk", 'dvc_over("base", family="finetune.families")\n', "",
     "rule base: wildcards ['family'] but dvc_over declares []"),
    ("data.smk", 'f"{LOGS}/download.log"', 'f"{LOGS}/download-{PROFILE}.log"',
     "different dvc.yaml for profiles mini and paper"),
])
def test_untranslatable_rules_are_refused(project, rule_file, old, new, message):
    edit(project / "workflow/rules" / rule_file, old, new)
    with pytest.raises(dvcgen.DvcGenError, match=message.replace("[", r"\[").replace("]", r"\]")):
        dvcgen.generate(project)


def test_config_overrides_other_than_profile_are_refused(project):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", "profile=mini", "bm25={'k1': 1.2}"],
                       cwd=project, capture_output=True, text=True)
    assert r.returncode != 0
    assert "--config/--configfile may only set `profile`, not bm25" in r.stdout + r.stderr


# ------------------------------------------------------------------ code deps vs import closure
def stage_module(rule: str) -> str:
    """The stage module a rule runs (tests/test_stage_registry.py checks its ``shell:`` calls it)."""
    return f"stages/{'figure' if rule.startswith('figure_') else rule}.py"


def _module_level(body: list) -> list:
    """Statements run when a module is imported (its body, inside module-level if/try too)."""
    out = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            for part in (node.body, node.orelse, getattr(node, "finalbody", []),
                         *[h.body for h in getattr(node, "handlers", [])]):
                out += _module_level(part)
    return out


def _resolve(here: Path, module: str, level: int, names, pkg_dir: Path) -> list[tuple[Path, tuple]]:
    """The package files an import names, each with the names taken from it (a submodule: none)."""
    if level:
        base = here
        for _ in range(level - 1):
            base = base.parent
    elif module == "irrepro" or module.startswith("irrepro."):
        base, module = pkg_dir, module.removeprefix("irrepro").lstrip(".")
    else:
        return []
    target = base.joinpath(*module.split(".")) if module else base
    out = [(f, tuple(names or ())) for f in (target.with_suffix(".py"), target / "__init__.py") if f.is_file()]
    for n in names or ():  # `from . import x` / `from .pkg import module`: the names may be modules
        out += [(f, ()) for f in (target / f"{n}.py", target / n / "__init__.py") if f.is_file()]
    return out


def _used_defs(tree: ast.Module, names) -> list[ast.AST]:
    """The module's top-level functions/classes among ``names`` and, transitively, those of the
    module they refer to (a helper the imported function calls)."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    seen, todo = {}, [n for n in names if n in defs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = defs[name]
        todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
    return list(seen.values())


def _imports(path: Path, names, pkg_dir: Path) -> list[tuple[Path, tuple]]:
    """What loading ``path`` and using ``names`` from it imports: its module-level imports and
    those inside the functions/classes used (names=None: the whole file -- a stage module, whose
    functions all serve its one stage). Imports in the module's other functions are not followed:
    a library holds several stages' code and imports each one's dependencies lazily."""
    tree = ast.parse(path.read_text(), str(path))
    if names is None:
        nodes = list(ast.walk(tree))
    else:
        nodes = _module_level(tree.body) + [n for d in _used_defs(tree, names) for n in ast.walk(d)]
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [r for a in node.names for r in _resolve(path.parent, a.name, 0, None, pkg_dir)]
        elif isinstance(node, ast.ImportFrom):
            out += _resolve(path.parent, node.module or "", node.level, [a.name for a in node.names], pkg_dir)
    return out


def import_closure(stage: Path, pkg_dir: Path) -> set[Path]:
    """Package files the stage module reaches through the names it imports, transitively."""
    seen, todo = set(), [(stage, None)]
    while todo:
        path, names = todo.pop()
        if (path, names) in seen:
            continue
        seen.add((path, names))
        todo += [i for i in _imports(path, names, pkg_dir) if i not in seen]
    return {path for path, _ in seen}


def rule_code_deps(root: Path) -> dict[str, list[str]]:
    """Every stage rule's code deps (package files among its inputs, in order), from the rules themselves."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(snakefile=root / "Snakefile", workdir=root, resource_settings=ResourceSettings(cores=1),
                          config_settings=ConfigSettings(config={"profile": "mini"}),
                          storage_settings=StorageSettings())._workflow
        # rules that run a stage (not the target rules such as `all`)
        return {r.name: [str(f) for f in r.input if str(f).startswith(PKG + "/")] for r in wf.rules if r.shellcmd}


def missing_code_deps(root: Path) -> dict[str, list[str]]:
    """rule -> modules its stage module's import closure reaches but its code list lacks."""
    pkg_dir = root / PKG
    out = {}
    for rule, deps in rule_code_deps(root).items():
        closure = import_closure(pkg_dir / stage_module(rule), pkg_dir)
        missing = sorted(str(p.relative_to(pkg_dir)) for p in closure
                         if str(p.relative_to(root)) not in deps and p.name not in INFRASTRUCTURE)
        if missing:
            out[rule] = missing
    return out


def test_each_rule_depends_on_its_stage_module_first(root):
    """``stage_code("<rule>", ...)`` (common.smk): the stage module heads every rule's code deps."""
    wrong = {rule: deps[:1] for rule, deps in rule_code_deps(root).items()
             if deps[:1] != [f"{PKG}/{stage_module(rule)}"]}
    assert not wrong, f"rules whose code deps do not start with their stage module: {wrong}"


def test_import_closure_finds_a_missing_module(project):
    """The check is not vacuous: dropping an imported module from a rule's list is reported, for
    a module-level import (bm25 -> java) and one inside the imported function (a lazy import)."""
    edit(project / "workflow/rules/bm25.smk", 'stage_code("index", "bm25.py", "java.py"),',
         'stage_code("index", "bm25.py"),')
    edit(project / "workflow/rules/rerank.smk", '"study1/finetune_inputs.py",\n', "")
    missing = missing_code_deps(project)
    assert missing.get("index") == ["java.py"]
    assert missing.get("finetune") == ["study1/finetune_inputs.py"]  # stages/_shared.launched_training imports it


def test_rule_code_deps_cover_their_import_closure(root):
    missing = missing_code_deps(root)
    assert not missing, "modules the stage module imports (transitively) but not in the rule's stage_code(...) " \
                        f"list (add them there, or to INFRASTRUCTURE here if they cannot change a result): {missing}"
