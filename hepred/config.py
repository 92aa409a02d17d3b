"""Config loading and validation against config.schema.yaml, with defaults filled in."""
from __future__ import annotations

import copy
import functools
import math
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hepred.errors import HepredError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# The paper's settings (Yalcin et al. 2024): the one copy, beside the workflow this package ships with.
PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_schema() -> dict[str, Any]:
    """config.schema.yaml: the one place where every setting's default, type and range live."""
    return copy.deepcopy(_schema())


def _extend_with_defaults(validator_class):
    """A validator that fills in each property's `default` before validating it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft7Validator)


def _describe(error: jsonschema.ValidationError, section: str | None = None) -> str:
    where = ".".join(str(p) for p in [*([section] if section else []), *error.absolute_path]) or "(top level)"
    if error.validator == "additionalProperties":
        return f"config {where}: {error.message} (see config.schema.yaml for the allowed keys)"
    if error.validator == "contains" and error.validator_value == {"const": "t1"}:
        return (
            f"config {where}: {error.instance} lacks t1, the reference scenario that every other "
            "row is tested against; add t1"
        )
    return f"config {where}: {error.message}"


BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _number(text: str) -> int | float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):  # nan and inf would pass every range check
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def coerce_numbers(instance: Any, schema: dict[str, Any]) -> Any:
    """``instance`` with numbers written as strings turned into numbers where ``schema`` wants one.

    PyYAML reads ``1e-5`` (YAML 1.1 wants ``1.0e-5``) and Snakemake's ``--config
    preprocess='{size: 256}'`` gives ``'256'`` (and ``'false'`` for a boolean): they are what
    the user meant, so they are read as such; anything else is left for the schema to refuse.
    """
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if isinstance(instance, str) and types == {"boolean"} and instance.strip().lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[instance.strip().lower()]
    if isinstance(instance, str) and types & {"integer", "number"} and "string" not in types:
        value = _number(instance.strip())
        if value is not None and ("number" in types or float(value).is_integer()):
            return int(value) if "number" not in types else value
        return instance
    if isinstance(instance, dict) and "properties" in schema:
        return {
            key: coerce_numbers(value, schema["properties"][key]) if key in schema["properties"] else value
            for key, value in instance.items()
        }
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [coerce_numbers(value, schema["items"]) for value in instance]
    return instance


def section_settings(section: str, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """One config section (given in part, or None) with the schema's defaults filled in and
    checked against the schema, so that code called without Snakemake (tests, predict,
    benchmarks) reads the same defaults as a workflow run; one HepredError line on a problem."""
    schema = _schema()["properties"][section]
    filled = coerce_numbers(copy.deepcopy(dict(cfg or {})), schema)
    errors = sorted(_DefaultFillingValidator(schema).iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        raise HepredError(_describe(errors[0], section))
    return filled


def validate_config(config: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """Return a validated copy with defaults filled; raise one HepredError line on the first problem."""
    schema = _schema()
    filled = coerce_numbers(copy.deepcopy(config) if config is not None else {}, schema)
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        raise HepredError(_describe(errors[0]), path=source)
    baselines = filled["baselines"]
    for key in ("null_control", "fusion"):
        if baselines[key] and baselines[key] not in filled["classifier"]["scenarios"]:
            raise HepredError(
                f"config baselines.{key}: {baselines[key]!r} is not among classifier.scenarios "
                f"({', '.join(filled['classifier']['scenarios'])}): the summary compares it with that scenario",
                path=source,
            )
    saliency = filled["report"]["saliency_scenario"]
    if saliency != "auto" and saliency not in filled["classifier"]["scenarios"]:
        raise HepredError(
            f"config report.saliency_scenario: {saliency!r} is not among classifier.scenarios "
            f"({', '.join(filled['classifier']['scenarios'])})",
            path=source,
        )
    unlisted = [model for model in baselines["fusion_models"] if model not in baselines["models"]]
    if baselines["fusion"] and unlisted:
        raise HepredError(
            f"config baselines.fusion: {baselines['fusion']!r} fuses with the {unlisted[0]} model, "
            f"which baselines.models does not list (add {unlisted[0]}, or set fusion: \"\")",
            path=source,
        )
    return filled


# Settings that change how fast a run goes, never a result (see docs/architecture.md).
SPEED_SETTINGS = {"": ("device",), "resources": ("training_threads",), "classifier": ("num_workers", "resident_memory_gb"),
                  "synthesis": ("sample_batch_size",)}
# What a job asks of the scheduler; it changes no result either.
JOB_REQUEST_SECTIONS = ("resources",)


def without_speed_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its speed settings and job requests (memory, runtime, GPUs): what a
    job may depend on without rerunning when only those change. Its sections come in sorted
    order: ``--config section=...`` moves the section it names to the front, and Snakemake
    compares params in order, so an unchanged config would otherwise look changed."""
    trimmed = {key: copy.deepcopy(config[key]) for key in sorted(config)}
    for section in JOB_REQUEST_SECTIONS:
        trimmed.pop(section, None)
    for section, keys in SPEED_SETTINGS.items():
        target = trimmed if not section else trimmed.get(section, {})
        for key in keys:
            target.pop(key, None)
    return trimmed


def saliency_scenario(config: dict[str, Any]) -> str:
    """The image scenario whose models are explained: report.saliency_scenario, where auto is
    the fusion's image scenario, else t1 (the reference every run has)."""
    chosen = config["report"]["saliency_scenario"]
    if chosen != "auto":
        return chosen
    return config["baselines"]["fusion"] or "t1"


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HepredError(f"cannot read config: {exc}".splitlines()[0], path=path) from None
    if not isinstance(raw, dict):
        raise HepredError("config must be a mapping of sections", path=path)
    for key, value in (overrides or {}).items():
        raw[key] = value
    return validate_config(raw, source=path)


def paper_preset() -> dict[str, Any]:
    """configs/paper.yaml with the schema's defaults filled in (for benchmarks and tests that
    use the paper's settings without the workflow)."""
    return load_config(PAPER_CONFIG)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def reference_table() -> str:
    """The README's configuration table, made from the schema (keys, defaults, meanings)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            key = f"{prefix}{name}"
            meaning = spec.get("description", "")
            if "enum" in spec:
                meaning = f"{meaning} One of {', '.join(map(str, spec['enum']))}.".strip()
            if spec.get("type") == "object" and "properties" in spec:
                rows.append(f"| **`{key}`** | | {_cell(meaning)} |")
                walk(spec["properties"], f"{key}.")
            else:
                default = json.dumps(spec.get("default"))
                rows.append(f"| `{key}` | `{_cell(default)}` | {_cell(meaning)} |")

    walk(load_schema()["properties"], "")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
