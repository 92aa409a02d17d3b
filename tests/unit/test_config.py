from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from hepred.classifier import classifier_settings
from hepred.config import coerce_numbers, load_config, load_schema, reference_table, section_settings, validate_config
from hepred.errors import HepredError
from hepred.preprocess import preprocess_settings
from hepred.stats import resolve_config
from hepred.synth import synthesis_settings

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
    "section, settings",
    [
        ("classifier", classifier_settings),
        ("synthesis", synthesis_settings),
        ("preprocess", preprocess_settings),
        ("statistics", lambda cfg: {k: v for k, v in resolve_config(cfg).items() if k not in ("seed", "probability_column")}),
    ],
)
def test_stages_called_from_python_fill_the_schema_defaults(section, settings):
    # predict, benchmarks and notebooks call the stages without the workflow: the defaults
    # they get are the schema's, and a key the schema does not know is refused by name.
    assert settings(None) == validate_config({})[section]
    with pytest.raises(HepredError, match=rf"config {section}: .*'no_such_key' was unexpected"):
        settings({"no_such_key": 1})


def test_numbers_written_as_strings_are_read_as_numbers():
    # PyYAML reads 1e-5 as a string; snakemake --config preprocess='{size: 256}' passes '256'.
    config = validate_config({"classifier": {"lr": "1e-5", "batch_size": "8"}, "preprocess": {"size": "256"}})
    assert config["classifier"]["lr"] == 1e-5 and config["classifier"]["batch_size"] == 8
    assert config["preprocess"]["size"] == 256
    assert yaml.safe_load("lr: 1e-5")["lr"] == "1e-5"  # why the coercion exists
    with pytest.raises(HepredError, match=r"config preprocess.size: '2.5' is not of type 'integer'"):
        validate_config({"preprocess": {"size": "2.5"}})
    with pytest.raises(HepredError, match=r"config classifier.lr: 'fast' is not of type 'number'"):
        validate_config({"classifier": {"lr": "fast"}})
    assert validate_config({"classifier": {"rotate90": "false"}})["classifier"]["rotate90"] is False
    with pytest.raises(HepredError, match=r"config classifier.lr: 'nan' is not of type 'number'"):
        validate_config({"classifier": {"lr": "nan"}})
    # Strings stay strings where the schema wants one.
    assert coerce_numbers({"samples": "123"}, load_schema()) == {"samples": "123"}


def test_scenarios_without_the_reference_are_refused_in_words():
    with pytest.raises(HepredError, match=r"\['t2', 't3'\] lacks t1, the reference scenario"):
        section_settings("classifier", {"scenarios": ["t2", "t3"]})


def test_every_speed_setting_is_a_key_of_the_schema():
    # A renamed key would silently start rerunning jobs again.
    from hepred.config import SPEED_SETTINGS, without_speed_settings

    defaults = validate_config({})
    for section, keys in SPEED_SETTINGS.items():
        for key in keys:
            assert key in (defaults[section] if section else defaults), (section, key)
    trimmed = without_speed_settings(defaults)
    assert "device" not in trimmed and "num_workers" not in trimmed["classifier"] and "resources" not in trimmed
    assert trimmed["classifier"]["lr"] == defaults["classifier"]["lr"] and "device" in defaults


def test_the_report_params_do_not_depend_on_the_order_of_config_sections():
    # --config classifier=... moves that section to the front; Snakemake compares params in order.
    from hepred.config import without_speed_settings

    config = {"seed": 0, "classifier": {"lr": 1e-3, "num_workers": 0}, "synthesis": {"epochs": 3}}
    moved = {"classifier": {"lr": 1e-3, "num_workers": 4, "resident_memory_gb": 2}, "seed": 0, "synthesis": {"epochs": 3}}
    assert list(without_speed_settings(moved).items()) == list(without_speed_settings(config).items())
