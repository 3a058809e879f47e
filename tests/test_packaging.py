"""Newcomer comforts: declared dependencies match the imports, LICENSE / CITATION.cff, --version,
the start-here epilog and shell completion."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib

import yaml

# declared but (rightly) never imported by the package: what each is for
NOT_IMPORTED = {
    "accelerate": "transformers' Trainer and `accelerate launch`",
    "ipykernel": "the notebooks' kernel",
    "pyserini": "imported by name through irrepro.java.import_pyserini",
    "snakemake": "the runner",
}
OPTIONAL = {"statsmodels"}  # [project.optional-dependencies]: imported only for --correction holm


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_distributions(root) -> set[str]:
    by_module = md.packages_distributions()
    found = set()
    for path in (root / "workflow" / "irrepro").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "irrepro":
                    continue
                found.update(_norm(d) for d in by_module.get(top, [top]))
    return found


def test_declared_dependencies_are_the_imported_ones(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {_norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    imported = _imported_distributions(root) - OPTIONAL
    assert not imported - declared, f"imported but not declared in pyproject.toml: {sorted(imported - declared)}"
    unused = declared - imported - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported (drop them or say why in NOT_IMPORTED): {sorted(unused)}"
    assert "pytest" not in declared and "pytest" in project["optional-dependencies"]["test"]


def test_license_notice_and_citation(root):
    license_text = (root / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    notice = (root / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "MS MARCO" in notice and "own terms" in notice
    cff = yaml.safe_load((root / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]
    refs = cff["references"]
    for ref in refs:
        assert {"type", "title", "authors"} <= set(ref), ref.get("title")
    dois = {r.get("doi") for r in refs}
    assert {"10.48550/arXiv.2504.08780", "10.48550/arXiv.2404.14772"} <= dois  # the two studies
    titles = " ".join(r["title"] for r in refs)
    for tool in ("Pyserini", "Tevatron", "ranx", "Snakemake", "DVC"):
        assert tool in titles


def test_version_start_here_and_completion(root):
    from irrepro import __version__

    def irrepro(*args):
        return subprocess.run([sys.executable, "-m", "irrepro", *args], cwd=root, capture_output=True, text=True)

    out = irrepro("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"irrepro {__version__}"
    assert __version__ == tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    help_text = irrepro("--help").stdout
    assert "start here" in help_text
    for command in ("make run", "make test", "irrepro plan", "irrepro rerank", "irrepro eval"):
        assert command in help_text
    completion = irrepro("--print-completion", "bash")
    assert completion.returncode == 0
    assert "rerank" in completion.stdout and "eval" in completion.stdout and "--rel-level" in completion.stdout
