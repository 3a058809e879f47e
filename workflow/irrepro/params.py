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

from .errors import InputError
from .secrets import is_secret_key
from .vocab import PROFILES, ROUTES
from .yamlio import load_yaml

# Scales written as per-profile values ({mini: x, paper: y}) are the code routes; `rehearsal` is the
# paper scale with workflow/rehearsal.yaml deep-merged over it (the paper route, sizes shrunk; see
# resolve_profile). PROFILES is re-exported from irrepro.vocab for the modules that import it here.
SCALES = ROUTES
PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = "params.yaml"
REHEARSAL_OVERLAY = PACKAGE_DIR.parent / "rehearsal.yaml"


def route(profile: str) -> str:
    """The code route of ``profile``: ``"mini"`` or ``"paper"`` (``rehearsal`` runs the paper route).
    Every branch on the scale (package, rules) asks this, never ``profile == ...``."""
    if profile not in PROFILES:
        raise ParamsError(f"profile: {profile!r} is not one of {list(PROFILES)}")
    return "mini" if profile == "mini" else "paper"


class ParamsError(InputError):
    """params.yaml is malformed; the message names the file and the key."""


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _is_per_profile(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(SCALES)


def resolve(raw: Any, profile: str, _path: tuple = (), source: str = DEFAULT_PARAMS) -> Any:
    """Return ``raw`` with every ``{mini: .., paper: ..}`` mapping replaced by ``profile``'s value."""
    if _is_per_profile(raw):
        missing = [p for p in SCALES if p not in raw]
        if missing:
            raise ParamsError(
                f"{source}: {_dotted(_path)}: a per-profile value needs both keys "
                f"{list(SCALES)}; missing {missing}"
            )
        return resolve(raw[profile], profile, _path + (profile,), source)
    if isinstance(raw, dict):
        return {k: resolve(v, profile, _path + (k,), source) for k, v in raw.items()}
    if isinstance(raw, list):
        return [resolve(v, profile, _path + (i,), source) for i, v in enumerate(raw)]
    return raw


def deep_merge(base: Any, overlay: Any) -> Any:
    """``overlay`` over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{k: deep_merge(base.get(k), v) for k, v in overlay.items()}}
    return copy.deepcopy(overlay)


def load_overlay(path: str | Path | None = None) -> dict:
    path = path or REHEARSAL_OVERLAY
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (the rehearsal profile's overlay)") from None
    if not isinstance(data, dict) or "profile" in data:
        raise ParamsError(f"{path}: must be a mapping of params.yaml sections (without `profile`)")
    return data


def resolve_profile(raw: dict, profile: str, source: str = DEFAULT_PARAMS) -> dict:
    """``raw`` resolved for ``profile``: mini / paper pick their values; rehearsal = paper's values
    with :data:`REHEARSAL_OVERLAY` deep-merged over them (an overlay key unknown to params.yaml is
    an error, so the overlay can only shrink knobs that exist)."""
    view = resolve({**raw, "profile": route(profile)}, route(profile), source=source)
    if profile == "rehearsal":
        overlay = load_overlay()

        def unknown(o, b, path=()):
            for k, v in o.items():
                here = path + (k,)
                if here == ("plan", "archs"):  # model sizes by id: a table, not knobs
                    continue
                if not isinstance(b, dict) or k not in b:
                    yield ".".join(map(str, here))
                elif isinstance(v, dict):
                    yield from unknown(v, b[k], here)
        bad = list(unknown(overlay, view))
        if bad:
            raise ParamsError(f"{REHEARSAL_OVERLAY}: {bad[0]}: not a params.yaml key (the overlay only resizes "
                              "existing knobs)")
        view = deep_merge(view, overlay)
    view["profile"] = profile
    return view


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return load_yaml(path)


def validate(resolved: dict, profile: str, source: str = DEFAULT_PARAMS, schema: dict | None = None) -> None:
    """Validate one resolved profile; raise ParamsError naming the first offending key."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [
            f"{source}: {_dotted(e.absolute_path)}: {_safe_message(e)} (profile {profile})" for e in errors
        ]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(lines))


def _safe_message(error) -> str:
    """A schema error's message without the value of any secret-named key (an API key pasted
    into params.yaml is named, never printed)."""
    inst = error.instance
    if error.validator == "not" and isinstance(inst, dict) and any(is_secret_key(k) for k in inst):
        keys = sorted(k for k in inst if is_secret_key(k))
        return (f"{keys} not allowed: secrets and endpoints come only from the environment (name the "
                f"variables with api_key_env / base_url_env)")
    message = error.message
    if isinstance(inst, dict):
        for k, v in inst.items():
            if is_secret_key(k) and isinstance(v, str) and v:
                message = message.replace(repr(v), "'***'").replace(v, "***")
    elif isinstance(inst, str) and error.absolute_path and is_secret_key(list(error.absolute_path)[-1]) and inst:
        message = message.replace(repr(inst), "'***'").replace(inst, "***")
    return message


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
        view = resolve_profile(raw, p, source=source)
        validate(view, p, source, schema)
        check_consistency(view, p, source)
        views[p] = view
    return views[chosen]


def check_consistency(view: dict, profile: str, source: str = DEFAULT_PARAMS) -> None:
    """Rules across keys that a JSON schema cannot express."""
    problems = []
    if "rerank" in view:
        R = view["rerank"]
        for key in ("checkpoint_datasets", "final_datasets"):
            extra = [d for d in R[key] if d not in view["datasets"]]
            if extra:
                problems.append(f"rerank.{key}: {extra} have no BM25 run (not in datasets: {view['datasets']})")
        both = [d for d in R["checkpoint_datasets"] if d in R["final_datasets"]]
        if both:
            problems.append(f"rerank.final_datasets: {both} also in rerank.checkpoint_datasets (a dataset is "
                            "reranked either with every checkpoint or with the final one only)")
        reranked = R["checkpoint_datasets"] + R["final_datasets"]
        src = view["train_data"]["source"]
        if src in reranked:
            problems.append(f"train_data.source: {src!r} is also an evaluation set in rerank.checkpoint_datasets/"
                            "final_datasets")
        if src != "tevatron" and src not in view["datasets"]:
            problems.append(f"train_data.source: {src!r} has no BM25 run (not in datasets: {view['datasets']})")
    if "ablate" in view:
        A, F = view["ablate"], view["finetune"]
        for key in ("families", "ranks", "targets"):
            extra = [x for x in A[key] if x not in F[key]]
            if extra:
                problems.append(f"ablate.{key}: {extra} not in the fine-tuning grid (finetune.{key}: {F[key]})")
        reranked = view["rerank"]["checkpoint_datasets"] + view["rerank"]["final_datasets"]
        extra = [d for d in A["datasets"] if d not in reranked]
        if extra:
            problems.append(f"ablate.datasets: {extra} not reranked (rerank.checkpoint_datasets + final_datasets: "
                            f"{reranked})")
        if A["metric"] not in view["evaluate"]["metrics"]:
            problems.append(f"ablate.metric: {A['metric']!r} is not computed (evaluate.metrics: {view['evaluate']['metrics']})")
    if "figures" in view:
        G = view["figures"]
        if G["metric"] not in view["evaluate"]["metrics"]:
            problems.append(f"figures.metric: {G['metric']!r} is not computed (evaluate.metrics: {view['evaluate']['metrics']})")
        curves = view["rerank"]["checkpoint_datasets"]
        if G["dataset"] not in curves:
            problems.append(f"figures.dataset: {G['dataset']!r} has no checkpoint curve (rerank.checkpoint_datasets: "
                            f"{curves})")
    if problems:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(f"{source}: {m} (profile {profile})" for m in problems))


def load_params(path: str | Path = DEFAULT_PARAMS, profile: str | None = None) -> dict:
    """Read, validate and resolve ``path`` for ``profile`` (default: the file's ``profile``)."""
    path = Path(path)
    try:
        raw = load_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root or pass --params)") from None
    except InputError as exc:  # names the file and line (duplicate key, syntax error)
        raise ParamsError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return check_and_resolve(raw, profile, source=str(path))
