"""Cross-validation splits: a user file validated and used as is, else stratified folds."""
import logging

from hepred.folds import load_user_splits, make_splits
from hepred.io import write_json
from hepred.labels import read_labels
from hepred.workflow import run_script

log = logging.getLogger("hepred.folds")


def main(smk):
    labels = read_labels(smk.input.labels)
    cfg = smk.params.folds
    if cfg["splits_file"]:
        splits = load_user_splits(cfg["splits_file"], sorted(labels))
        log.info("using the user's splits file %s as is", cfg["splits_file"])
    else:
        splits = make_splits(labels, cfg["k"], cfg["val_fraction"], smk.params.seed)
    write_json(smk.output[0], splits)


run_script(snakemake, main)  # noqa: F821
