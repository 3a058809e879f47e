"""The one YAML reader of the project: safe loading, duplicate keys are errors.

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping without a word, so a
``params.yaml`` with ``lr`` written twice trains with whichever came last. Every YAML file
the project reads (params, schemas, graphs, prompts, sources, references, deviations,
runtimes) goes through :func:`load_yaml` / :func:`load_yaml_text`, which raise
:class:`YAMLInputError` naming the file, the line of the repeated key and the line of the
first one. ``YAMLInputError`` is both an ``InputError`` (exit code 2) and a
``yaml.YAMLError``, so callers that already turn YAML errors into their own keep working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


class YAMLInputError(InputError, yaml.YAMLError):
    """A YAML file that does not parse or repeats a key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


# libyaml's parser when PyYAML was built with it: the same nodes, resolved and constructed by the
# same Python code, ten times faster (every job reads params.yaml and its schema at start-up).
# A document it rejects is parsed again by the pure-Python one, whose messages name more (the
# undefined alias, the offending character), so errors read as before.
_FastUniqueKeyLoader = type("_FastUniqueKeyLoader", (yaml.CSafeLoader,), {}) if hasattr(yaml, "CSafeLoader") else None


def _construct_mapping(loader, node, deep=False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merge keys may repeat by design
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: let SafeLoader report it
            break
        line = key_node.start_mark.line + 1
        if first is not None:
            raise YAMLInputError(f"duplicate key {key!r}", file=loader.name, line=line,
                                 hint=f"first at line {first}; PyYAML would silently keep the last")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


for _loader in (_UniqueKeyLoader, _FastUniqueKeyLoader):
    if _loader is not None:
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse(loader_class, text: str, source: str | os.PathLike) -> Any:
    loader = loader_class(text)
    loader.name = os.fspath(source)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_text(text: str, source: str | os.PathLike = "<string>") -> Any:
    """Parse YAML ``text`` (named ``source`` in errors); duplicate keys and syntax errors raise
    :class:`YAMLInputError` with the file and line."""
    if _FastUniqueKeyLoader is not None:
        try:
            return _parse(_FastUniqueKeyLoader, text, source)
        except YAMLInputError:
            raise
        except yaml.YAMLError:
            pass  # parsed again below for the message
    try:
        return _parse(_UniqueKeyLoader, text, source)
    except YAMLInputError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "not valid YAML"
        raise YAMLInputError(f"not valid YAML: {what}", file=source,
                             line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"not valid YAML: {exc}", file=source) from None


def load_yaml(path: str | os.PathLike) -> Any:
    """Read and parse the YAML file ``path`` (see :func:`load_yaml_text`). A missing file raises
    ``FileNotFoundError`` as ``open`` would (callers add their own hint)."""
    return load_yaml_text(Path(path).read_text(encoding="utf-8-sig"), path)
