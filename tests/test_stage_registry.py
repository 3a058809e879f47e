"""The stage registry (irrepro.stages): one module per Snakemake rule, named as the rule.

Read from the rule files themselves: every rule's ``shell:`` calls the stage named as the rule
(the ``figure_<name>`` rules share ``figure``), every stage is called by some rule, every flag a
rule passes is declared by its stage, and every ``{output}`` a rule passes is a locked output
of its stage. And the lock itself, between two real processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irrepro.cli import make_parser
from irrepro.cli_tools import TOOLS
from irrepro.cli_user import USER_COMMANDS
from irrepro.commands import OUT
from irrepro.params import load_params
from irrepro.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
COMMON = {"--profile", "--params", "--log", "--debug"}


def _shell_commands() -> dict[str, str]:
    """rule name -> its shell command (the concatenated string literals after ``shell:``)."""
    rules: dict[str, str] = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        # `rule name:` or, for the rules made in a loop, `rule:` + `name: f"figure_{_name}"`
        for m in re.finditer(r"^\s*rule(?: (\w+))?:\n(.*?)(?=^\s*rule\b|\Z)", text, re.S | re.M):
            body = m.group(2)
            name = m.group(1) or re.search(r'name:\s*f?"([^"]+)"', body).group(1).replace("{_name}", "*")
            shell = re.search(r"shell:\s*\n((?:\s*f?\"[^\n]*\"\n?)+)", body)
            if shell:
                rules[name] = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', shell.group(1)))
    return rules


SHELLS = _shell_commands()


def _stage_of(rule: str) -> str:
    return "figure" if rule.startswith("figure_") else rule.replace("_", "-")


def test_rules_were_found():
    assert len(SHELLS) >= 25 and "rerank_eval" in SHELLS and "figure_*" in SHELLS, sorted(SHELLS)


@pytest.mark.parametrize("rule", sorted(SHELLS))
def test_each_rule_calls_the_stage_named_as_the_rule(rule):
    shell = SHELLS[rule]
    m = re.match(r"irrepro ([a-z0-9-]+) ", shell)
    assert m, f"rule {rule}: shell does not start with an irrepro command: {shell!r}"
    assert m.group(1) == _stage_of(rule), f"rule {rule} calls `irrepro {m.group(1)}`"
    stage = STAGES[m.group(1)]
    declared = {arg.flag for arg in stage.args} | COMMON
    flags = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", shell)
    # the figure rules pass their --input KEY=PATH pairs through {params.inputs}
    assert set(flags) <= declared, f"rule {rule} passes {sorted(set(flags) - declared)} that stage {stage.name} lacks"
    outs = {arg.flag for arg in stage.args if arg.role == OUT}
    for flag, value in re.findall(r"(--[a-z][a-z0-9-]*) (\{[^}]+\})", shell):
        if value.startswith("{output"):
            assert flag in outs, f"rule {rule}: {flag} {value} is an output, not locked by stage {stage.name}"


def test_every_stage_is_called_by_a_rule():
    used = {_stage_of(rule) for rule in SHELLS}
    assert set(STAGES) == used, f"unused stages: {sorted(set(STAGES) - used)}; unknown: {sorted(used - set(STAGES))}"


def test_every_stage_writes_a_locked_output():
    for stage in STAGES.values():
        assert any(arg.role == OUT and arg.required for arg in stage.args), stage.name


def test_declared_params_keys_exist():
    for profile in ("mini", "paper"):
        P = load_params(ROOT / "params.yaml", profile)
        for command in (*STAGES.values(), *USER_COMMANDS, *TOOLS):
            for key in command.params:
                node = P
                for part in key.split("."):
                    assert isinstance(node, dict) and part in node, f"{command.name}: params key {key!r} ({profile})"
                    node = node[part]


def test_command_names_are_unique_and_tools_sit_under_tools():
    names = [c.name for c in (*STAGES.values(), *USER_COMMANDS)]
    assert len(names) == len(set(names)) and "tools" not in names
    parser = make_parser()
    ns = parser.parse_args(["tools", "syntod-check", "--inputs", "a.jsonl", "--out", "o.json"])
    assert ns.command == "tools syntod-check" and ns.spec.outputs(ns) == ["o.json"]
    with pytest.raises(SystemExit):
        parser.parse_args(["syntod-check", "--inputs", "a.jsonl", "--out", "o.json"])
    ns = parser.parse_args(["collect", "--raw", "r", "--runs", "b", "--rerank-runs", "rr", "--out-tsv", "t",
                            "--out-json", "j", "--out-md", "m", "--out-tex", "x"])
    assert ns.spec.outputs(ns) == ["t", "j", "m", "x"]  # --out-plot not given: nothing to lock


def _irrepro(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "irrepro", *args, "--params", str(ROOT / "params.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_second_job_on_the_same_output_fails_at_once_naming_the_holder(tmp_path):
    """Two real `irrepro index` processes on one --out: the first holds the lock while it blocks
    reading its corpus (a named pipe), the second fails within seconds naming the first's pid;
    the first then finishes (on a bad corpus: exit 2) and leaves no lock file behind."""
    fifo, out = tmp_path / "corpus.jsonl", tmp_path / "index"
    os.mkfifo(fifo)
    first = _irrepro("index", "--corpus", str(fifo), "--out", str(out), cwd=tmp_path)
    try:
        lock = tmp_path / "index.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first job never took the lock"
            time.sleep(0.05)
        other = tmp_path / "other.jsonl"
        other.write_text('{"id": "1", "contents": "a"}\n')
        t0 = time.monotonic()
        second = _irrepro("index", "--corpus", str(other), "--out", str(out), "--log", str(tmp_path / "second.log"),
                          cwd=tmp_path)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert time.monotonic() - t0 < 30  # at once: no waiting for the holder
        line = next(x for x in err.splitlines() if x.startswith("irrepro index: "))
        assert f"{out}: another index is writing this output: pid {first.pid}" in line, line
        assert line in (tmp_path / "second.log").read_text()
        assert not out.exists()
    finally:
        with open(fifo, "w") as fh:  # unblock the first job: a duplicate id, refused before the JVM starts
            fh.write('{"id": "1", "contents": "a"}\n{"id": "1", "contents": "b"}\n')
        _, err = first.communicate(timeout=60)
    assert first.returncode == 2 and "duplicate passage id '1'" in err, err
    assert not lock.exists() and not out.exists()
