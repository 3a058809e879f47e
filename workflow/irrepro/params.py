"""Load params.yaml, resolve per-profile values and validate against the JSON schema.

A value that differs between scales is written ``{mini: x, paper: y}``; :func:`resolve`
replaces every such mapping by the chosen profile's value. The resolved config is
validated for *both* profiles, so a typo in a paper value fails a mini run early.
Errors name the file, the dotted key and (from jsonschema) the allowed values.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PROFILES = ("mini", "paper")
PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = "params.yaml"


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the file and the key."""


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _is_per_profile(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(PROFILES)


def resolve(raw: Any, profile: str, _path: tuple = (), source: str = DEFAULT_PARAMS) -> Any:
    """Return ``raw`` with every ``{mini: .., paper: ..}`` mapping replaced by ``profile``'s value."""
    if _is_per_profile(raw):
        missing = [p for p in PROFILES if p not in raw]
        if missing:
            raise ParamsError(
                f"{source}: {_dotted(_path)}: a per-profile value needs both keys "
                f"{list(PROFILES)}; missing {missing}"
            )
        return resolve(raw[profile], profile, _path + (profile,), source)
    if isinstance(raw, dict):
        return {k: resolve(v, profile, _path + (k,), source) for k, v in raw.items()}
    if isinstance(raw, list):
        return [resolve(v, profile, _path + (i,), source) for i, v in enumerate(raw)]
    return raw


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate(resolved: dict, profile: str, source: str = DEFAULT_PARAMS, schema: dict | None = None) -> None:
    """Validate one resolved profile; raise ParamsError naming the first offending key."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [
            f"{source}: {_dotted(e.absolute_path)}: {e.message} (profile {profile})" for e in errors
        ]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(lines))


def check_and_resolve(raw: Any, profile: str | None = None, source: str = DEFAULT_PARAMS) -> dict:
    """Validate ``raw`` (the parsed params.yaml) for every profile; return ``profile``'s view."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    if profile is not None:
        raw["profile"] = profile
    chosen = raw.get("profile")
    if chosen not in PROFILES:
        raise ParamsError(f"{source}: profile: {chosen!r} is not one of {list(PROFILES)}")
    schema = load_schema()
    views = {}
    for p in PROFILES:
        view = resolve({**raw, "profile": p}, p, source=source)
        validate(view, p, source, schema)
        check_consistency(view, p, source)
        views[p] = view
    return views[chosen]


def check_consistency(view: dict, profile: str, source: str = DEFAULT_PARAMS) -> None:
    """Rules across keys that a JSON schema cannot express."""
    problems = []
    if "rerank" in view:
        extra = [d for d in view["rerank"]["datasets"] if d not in view["datasets"]]
        if extra:
            problems.append(f"rerank.datasets: {extra} have no BM25 run (not in datasets: {view['datasets']})")
        src = view["train_data"]["source"]
        if src in view["rerank"]["datasets"]:
            problems.append(f"train_data.source: {src!r} is also an evaluation set in rerank.datasets")
        if src != "tevatron" and src not in view["datasets"]:
            problems.append(f"train_data.source: {src!r} has no BM25 run (not in datasets: {view['datasets']})")
    if "ablate" in view:
        A, F = view["ablate"], view["finetune"]
        for key in ("families", "ranks", "targets"):
            extra = [x for x in A[key] if x not in F[key]]
            if extra:
                problems.append(f"ablate.{key}: {extra} not in the fine-tuning grid (finetune.{key}: {F[key]})")
        extra = [d for d in A["datasets"] if d not in view["rerank"]["datasets"]]
        if extra:
            problems.append(f"ablate.datasets: {extra} not reranked (rerank.datasets: {view['rerank']['datasets']})")
        if A["metric"] not in view["evaluate"]["metrics"]:
            problems.append(f"ablate.metric: {A['metric']!r} is not computed (evaluate.metrics: {view['evaluate']['metrics']})")
    if "figures" in view:
        G = view["figures"]
        if G["metric"] not in view["evaluate"]["metrics"]:
            problems.append(f"figures.metric: {G['metric']!r} is not computed (evaluate.metrics: {view['evaluate']['metrics']})")
        if G["dataset"] not in view["rerank"]["datasets"]:
            problems.append(f"figures.dataset: {G['dataset']!r} is not reranked (rerank.datasets: {view['rerank']['datasets']})")
    if problems:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(f"{source}: {m} (profile {profile})" for m in problems))


def load_params(path: str | Path = DEFAULT_PARAMS, profile: str | None = None) -> dict:
    """Read, validate and resolve ``path`` for ``profile`` (default: the file's ``profile``)."""
    path = Path(path)
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return check_and_resolve(raw, profile, source=str(path))
