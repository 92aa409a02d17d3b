from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from hepred.classifier import DEFAULTS as classifier_defaults
from hepred.config import load_config, load_schema, reference_table, validate_config
from hepred.errors import HepredError
from hepred.preprocess import DEFAULTS as preprocess_defaults
from hepred.stats import DEFAULTS as statistics_defaults
from hepred.synth import DEFAULTS as synthesis_defaults

REPO = Path(__file__).resolve().parents[2]


def test_default_config_validates_and_fills_defaults():
    config = load_config(REPO / "config.yaml")
    assert config["folds"]["k"] == 5
    assert config["labels"]["growth_ml"] == 6.0


def test_unknown_key_is_one_clear_line(tmp_path):
    with pytest.raises(HepredError) as error:
        validate_config({"folds": {"k": 5, "kk": 3}}, source="my.yaml")
    message = str(error.value)
    assert "folds" in message and "'kk'" in message and "my.yaml" in message
    assert "\n" not in message


def test_wrong_type_is_reported_with_its_key():
    with pytest.raises(HepredError, match=r"folds\.k.*not of type 'integer'"):
        validate_config({"folds": {"k": "five"}})


def test_unknown_top_level_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sampels": "x.csv"}))
    with pytest.raises(HepredError, match="sampels"):
        load_config(path)


def test_schema_entries_use_only_json_schema_keywords():
    # An unquoted comma in a YAML flow mapping ({description: a, b}) silently makes a stray key.
    keywords = set(Draft7Validator.META_SCHEMA["properties"])

    def walk(properties, prefix=""):
        for name, spec in properties.items():
            assert set(spec) <= keywords, f"{prefix}{name}: {sorted(set(spec) - keywords)}"
            walk(spec.get("properties", {}), f"{prefix}{name}.")

    walk(load_schema()["properties"])


def test_readme_configuration_table_is_the_schema():
    readme = (REPO / "README.md").read_text()
    assert reference_table() in readme, "README table is stale: python -m hepred.config prints the current one"


@pytest.mark.parametrize(
    "section, package_defaults",
    [
        ("classifier", classifier_defaults),
        ("synthesis", synthesis_defaults),
        ("preprocess", preprocess_defaults),
        ("statistics", {key: value for key, value in statistics_defaults.items() if key != "seed"}),
    ],
)
def test_package_defaults_are_the_schema_defaults(section, package_defaults):
    # The stages fill their own defaults when called from Python (predict, notebooks); they
    # must be the ones the workflow gets from the schema.
    assert validate_config({})[section] == package_defaults
