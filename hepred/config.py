"""Config loading and validation against config.schema.yaml, with defaults filled in."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hepred.errors import HepredError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


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


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        return f"config {where}: {error.message} (see config.schema.yaml for the allowed keys)"
    return f"config {where}: {error.message}"


def validate_config(config: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """Return a validated copy with defaults filled; raise one HepredError line on the first problem."""
    filled = copy.deepcopy(config) if config is not None else {}
    validator = _DefaultFillingValidator(load_schema())
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
    if baselines["fusion"] and "radiomics" not in baselines["models"]:
        raise HepredError(
            f"config baselines.fusion: {baselines['fusion']!r} fuses with the radiomics model, "
            "which baselines.models does not list (add radiomics, or set fusion: \"\")",
            path=source,
        )
    return filled


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
