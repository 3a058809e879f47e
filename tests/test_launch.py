"""Multi-process training launch (params `finetune.launcher`, `finetune.nproc_per_node`)."""

import json
import subprocess
import sys

import pytest
import yaml

from irrepro.launch import launch_command

from test_finetune import synthetic_groups


def test_launch_command(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["finetune", "--family", "llama"]
    assert launch_command(argv, "none", 4) is None
    assert launch_command(argv, "torchrun", 1) is None
    cmd = launch_command(argv, "torchrun", 4, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "irrepro", "--", *argv]
    cmd = launch_command(argv, "accelerate", 2, python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"] and "--num_processes=2" in cmd
    assert cmd[-len(argv) - 3:] == ["-m", "irrepro", "--", *argv]
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside a launched process: never launch again
    assert launch_command(argv, "torchrun", 4) is None
    with pytest.raises(ValueError, match="finetune.launcher: 'mpirun'"):
        launch_command(argv, "mpirun", 2)


def test_launchers_pass_our_options_through(monkeypatch):
    """The launchers' own parsers hand every option of ours to the module unchanged: `--log` is a
    prefix of torchrun's --log-dir / --logs-specs and failed as "ambiguous option" (rehearsal)."""
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import get_args_parser

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["finetune-tod", "--profile", "mini", "--log", "logs/x.log"]
    for launcher, parser in (("torchrun", get_args_parser()), ("accelerate", launch_command_parser())):
        args = parser.parse_args(launch_command(argv, launcher, 2, python="py")[3:])
        assert (args.training_script, args.training_script_args) == ("irrepro", argv), launcher


@pytest.mark.slow
def test_finetune_under_torchrun_two_cpu_processes(root, tiny_base_dir, tmp_path):
    """The real thing on CPU: `irrepro finetune` re-executes itself under torchrun with two
    gloo processes; the Trainer sees world size 2 and rank 0 alone publishes the output."""
    from irrepro.rerank.data import write_groups

    groups = tmp_path / "groups.jsonl"
    write_groups(synthetic_groups(n_queries=8), groups)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"].update(launcher={"mini": "torchrun", "paper": "torchrun"}, nproc_per_node=2,
                              max_steps={"mini": 2, "paper": -1}, save_steps={"mini": 1, "paper": 50},
                              queries_per_device={"mini": 2, "paper": 16}, group_size={"mini": 4, "paper": 16})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "lora"
    proc = subprocess.run(
        [sys.executable, "-m", "irrepro", "finetune", "--params", str(tmp_path / "params.yaml"), "--profile", "mini",
         "--family", "llama", "--rank", "2", "--targets", "mha", "--base", str(tiny_base_dir("llama")),
         "--groups", str(groups), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "launching 2 processes" in proc.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not out.with_name("lora.partial").exists()
