"""Declarative sub-commands: what a command takes, what it reads and what it writes.

Every ``irrepro`` command (a workflow stage of :mod:`irrepro.stages`, a user command of
:mod:`irrepro.cli_user`, a developer tool of :mod:`irrepro.cli_tools`) is a :class:`Command`:
its name, one help line, its arguments as :class:`Arg` specs, the params keys it reads and a
handler ``run(args, params) -> exit code``. :mod:`irrepro.cli` builds the argparse tree from
them; nothing else describes a command's arguments.

The spec marks which arguments are paths the command *writes* (:func:`Out`): while the
command runs, each given output holds an exclusive lock (:func:`irrepro.locking.output_lock`),
so a second job on the same output fails at once naming the holder instead of writing into
the same files (issue 12, "no clobbering").
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

#: roles of an argument: a path the command reads, a path it writes (locked), anything else
IN, OUT, VALUE = "in", "out", "value"


@dataclass(frozen=True)
class Arg:
    """One argument: ``flag`` ("--out", or a positional name), its help, whether it is required,
    its ``role`` (:data:`IN` / :data:`OUT` / :data:`VALUE`), an optional mutually exclusive
    ``group`` (exactly one argument of each group must be given), any other argparse keyword
    (``type``, ``choices``, ``nargs``, ``default``, ``action``, ``metavar``) in ``options`` and a
    short ``alias``."""

    flag: str
    help: str | None = None
    required: bool = False
    role: str = VALUE
    group: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    alias: str | None = None  # a short form, e.g. "-r" for "--remote"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser) -> None:
        kw = dict(self.options)
        if self.help is not None:
            kw["help"] = self.help
        if self.flag.startswith("-") and self.group is None:
            kw["required"] = self.required
        parser.add_argument(*([self.alias] if self.alias else []), self.flag, **kw)


def In(flag: str, help: str | None = None, *, required: bool = True, group: str | None = None, **options) -> Arg:
    """A path the command reads (required unless said otherwise)."""
    return Arg(flag, help, required, IN, group, options)


def Out(flag: str, help: str | None = None, *, required: bool = True, **options) -> Arg:
    """A path the command writes: locked exclusively while the command runs."""
    return Arg(flag, help, required, OUT, None, options)


def Opt(flag: str, help: str | None = None, *, required: bool = False, group: str | None = None,
        alias: str | None = None, **options) -> Arg:
    """Any other argument (a name, a number, a switch)."""
    return Arg(flag, help, required, VALUE, group, options, alias)


@dataclass(frozen=True)
class Command:
    """One sub-command: see the module docstring."""

    name: str
    help: str
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace, dict], int]
    params: tuple[str, ...] = ()  # params.yaml keys the command reads (dotted, e.g. "bm25.k1", or a section)
    description: str | None = None

    def add_to(self, sub, common: Callable[[argparse.ArgumentParser], None],
               prefix: str = "") -> argparse.ArgumentParser:
        """Register the command on the sub-parsers ``sub`` (``common`` adds --profile/--params/--log);
        ``args.command`` becomes ``prefix + name`` (``"tools syntod-check"``), as errors name it."""
        p = sub.add_parser(self.name, help=self.help, description=self.description or self.help)
        common(p)
        groups: dict[str, Any] = {}
        for arg in self.args:
            target = p
            if arg.group is not None:
                target = groups.get(arg.group) or groups.setdefault(arg.group, p.add_mutually_exclusive_group(
                    required=True))
            arg.add_to(target)
        p.set_defaults(command=prefix + self.name, spec=self)
        return p

    def outputs(self, a: argparse.Namespace) -> list[str]:
        """The output paths given on this invocation (the :func:`Out` arguments)."""
        paths: list[str] = []
        for arg in self.args:
            if arg.role == OUT:
                value = getattr(a, arg.dest, None)
                if isinstance(value, (list, tuple)):
                    paths += [str(v) for v in value]
                elif value is not None:
                    paths.append(str(value))
        return paths

    def __call__(self, a: argparse.Namespace, P: dict) -> int:
        """Run the handler holding the exclusive lock of every output. A process started by a
        multi-process launcher (``LOCAL_RANK`` set: :mod:`irrepro.launch`) runs under its
        parent's locks and takes none."""
        from .launch import in_distributed_child
        from .locking import output_lock

        with contextlib.ExitStack() as held:
            if not in_distributed_child():
                for path in dict.fromkeys(self.outputs(a)):
                    held.enter_context(output_lock(path, self.name))
            return self.run(a, P)


def register(sub, commands: Iterable[Command], common: Callable[[argparse.ArgumentParser], None],
             prefix: str = "") -> None:
    for command in commands:
        command.add_to(sub, common, prefix)
