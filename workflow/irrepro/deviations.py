"""The deviation registry: known differences between the ``paper`` profile and the originals.

``resources/deviations.yaml`` holds one row per difference (format in the file's header),
validated by ``workflow/schemas/deviations.schema.yaml`` plus the checks a JSON schema
cannot express:

* ids are unique, and each id starts with its study (``study1-...`` / ``syntod-...``);
* ``switch`` is null or a dotted key that exists in params.yaml (the knob that selects the
  original behaviour), so a renamed parameter cannot leave a dangling reference.

Every error names the file, the row (its id, or its position when the id is missing) and
the key. The registry describes the paper profile; the reproduction report prints it for
both profiles and says so.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from .yamlio import load_yaml

from .params import PACKAGE_DIR

__all__ = ["DeviationsError", "COLUMNS", "load_deviations", "default_path", "markdown_table"]

SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "deviations.schema.yaml"
# the project's params.yaml, used when the working directory has none (e.g. a notebook run elsewhere)
_PROJECT_PARAMS = PACKAGE_DIR.parent.parent / "params.yaml"
# report columns: (row key, header)
COLUMNS = (("id", "id"), ("original", "what the original does"), ("ours", "what we do"),
           ("why", "why"), ("switch", "switch"))


class DeviationsError(ValueError):
    """The registry is malformed; the message names the file, the row id and the key."""


def default_path() -> Path:
    """The packaged registry, ``irrepro/resources/deviations.yaml``."""
    return Path(str(resources.files("irrepro").joinpath("resources", "deviations.yaml")))


def _row_name(rows: list, index: int) -> str:
    row = rows[index] if 0 <= index < len(rows) else None
    if isinstance(row, Mapping) and isinstance(row.get("id"), str) and row["id"]:
        return f"row {row['id']!r}"
    return f"row {index + 1} (no id)"


def _schema_errors(doc: Any, where: str) -> list[str]:
    schema = load_yaml(SCHEMA_PATH)
    rows = doc.get("deviations") if isinstance(doc, Mapping) else None
    rows = rows if isinstance(rows, list) else []
    messages = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.path))):
        path = list(err.absolute_path)
        if len(path) >= 2 and path[0] == "deviations" and isinstance(path[1], int):
            key = ".".join(map(str, path[2:])) or "<row>"
            if err.validator == "pattern" and key == "source":
                detail = ("does not look like '<owner>/<repo>@<hex commit> <path>:<line>' "
                          f"(lines may be ranges 12-20 or lists 12,30; got {err.instance!r})")
            else:
                detail = err.message
            messages.append(f"{where}: {_row_name(rows, path[1])}: {key}: {detail}")
        else:
            messages.append(f"{where}: {'.'.join(map(str, path)) or '<top level>'}: {err.message}")
    return messages


def _params_mapping(params: Mapping | str | os.PathLike | None) -> tuple[Mapping, str]:
    if isinstance(params, Mapping):
        return params, "params"
    if params is None:
        params = "params.yaml" if Path("params.yaml").is_file() else _PROJECT_PARAMS
    return load_yaml(params) or {}, str(params)


def _has_key(params: Mapping, dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def load_deviations(path: str | os.PathLike | None = None,
                    params: Mapping | str | os.PathLike | None = None) -> list[dict]:
    """The registry's rows as dicts (file order; ``[]`` when it has none), validated.

    ``path``: the registry (default :func:`default_path`). ``params``: params.yaml as a
    mapping (raw or one profile's resolved view: both have the same keys) or a path
    (default: ``./params.yaml``, else the project's). Raises :class:`DeviationsError`
    listing every problem, each naming the row and the key.
    """
    path = Path(path) if path is not None else default_path()
    where = str(path)
    try:
        doc = load_yaml(path)
    except FileNotFoundError:
        raise DeviationsError(f"{where}: not found") from None
    except yaml.YAMLError as exc:
        raise DeviationsError(f"{where}: not valid YAML: {exc}") from None
    problems = _schema_errors(doc, where)
    if problems:
        raise DeviationsError("invalid deviation registry:\n  " + "\n  ".join(problems))
    rows = [dict(r) for r in (doc["deviations"] or [])]

    param_map, param_src = _params_mapping(params)
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        name = f"{where}: row {row['id']!r}"
        if row["id"] in seen:
            problems.append(f"{name}: id: duplicate id (rows {seen[row['id']] + 1} and {i + 1})")
        seen.setdefault(row["id"], i)
        if not row["id"].startswith(row["study"] + "-"):
            problems.append(f"{name}: id: must start with its study '{row['study']}-'")
        if row["switch"] is not None and not _has_key(param_map, row["switch"]):
            problems.append(f"{name}: switch: key {row['switch']!r} does not exist in {param_src}")
    if problems:
        raise DeviationsError("invalid deviation registry:\n  " + "\n  ".join(problems))
    return rows


def _cell(value: Any) -> str:
    text = "-" if value is None else " ".join(str(value).split())
    return text.replace("|", "\\|")


def markdown_table(rows: list[Mapping]) -> str:
    """The rows as a markdown table (columns :data:`COLUMNS`, the original's source in
    brackets after what it does; the switch as code, ``-`` if none)."""
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row[k]) for k, _ in COLUMNS]
        cells[1] += f" ({_cell(row['source'])})"  # where the original does it, for the reader to check
        if row["switch"] is not None:
            cells[-1] = f"`{cells[-1]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
