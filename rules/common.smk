# Shared helpers: config validation, the case list, result paths.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The hepred package sits beside this workflow: importable here and in every job's script,
# also inside a --use-conda environment that holds only the dependencies.
sys.path.insert(0, workflow.basedir)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
    )
)

from hepred.classifier.settings import result_settings as classifier_result_settings
from hepred.config import saliency_scenario, validate_config, without_speed_settings
from hepred.errors import HepredError
from hepred.failures import failure_report, write_failed_cases
from hepred.markers import MARKER_FEATURES
from hepred.samplesheet import read_sample_sheet
from hepred.workflow import visible_gpus
from hepred.samplesheet import demo_case_ids
from hepred.synth.config import model_settings as generator_model_settings
from hepred.synth.config import result_settings as synthesis_result_settings

try:
    config.update(validate_config(config, source=None))
except HepredError as error:
    raise WorkflowError(f"hepred: {error}")



def limit_training_to_local_gpus():
    """One GPU workstation: at most one training job per visible GPU (each asks for
    resources.gpu of them), so that several cores never start several trainings on one GPU.
    A --resources gpu=N of the user's wins; on a cluster its scheduler hands out the GPUs."""
    if config["device"] == "cpu" or not config["resources"]["gpu"]:
        return
    if "gpu" in workflow.global_resources:
        return
    gpus = visible_gpus()
    if gpus:
        workflow.register_resource("gpu", gpus)
        print(
            f"hepred: {gpus} GPU(s) visible: at most {gpus // config['resources']['gpu']} "
            "training job(s) at a time (--resources gpu=N to change)",
            file=sys.stderr,
        )


# While the Snakefile is read the executor is not known yet: only a --cores run (no --jobs)
# is surely local. Any other local run gets its limit when it starts (Snakefile onstart).
if workflow.resource_settings.nodes is None:
    limit_training_to_local_gpus()

RESULTS = config["results"].rstrip("/")
DEMO = not config["samples"]
SHEET = f"{config['demo']['out']}/samples.csv" if DEMO else config["samples"]

if DEMO:
    CASES = demo_case_ids(config["demo"]["n"])
    CASE_FILES = {}
else:
    try:
        _sheet_cases = read_sample_sheet(SHEET)
    except HepredError as error:
        raise WorkflowError(f"hepred: {error}")
    CASES = [case.case_id for case in _sheet_cases]
    CASE_FILES = {
        case.case_id: [
            str(p)
            for p in (case.ct, case.lesion, case.followup_lesion)
            if p is not None
        ]
        for case in _sheet_cases
    }

FOLDS = list(range(config["folds"]["k"]))
IMAGE_SCENARIOS = config["classifier"]["scenarios"]
SYNTHETIC_SCENARIOS = {"t3", "t5", "null_t3", "null_t5"}
BASELINE_MODELS = config["baselines"]["models"]
NULL_CONTROL = (
    [f"null_{config['baselines']['null_control']}"]
    if config["baselines"]["null_control"]
    else []
)
FUSION_IMAGE = config["baselines"]["fusion"]
SALIENCY_SCENARIO = saliency_scenario(config)
# Every row of the statistics: image scenarios, null control, baselines, fusion.
SCENARIOS = (
    IMAGE_SCENARIOS
    + NULL_CONTROL
    + BASELINE_MODELS
    + (["fusion"] if FUSION_IMAGE else [])
)


wildcard_constraints:
    case=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    fold=r"\d+",
    scenario=r"(null_)?t\d+|volume|radiomics|markers|fusion",


def case_inputs(wildcards):
    """The case's own files, when they exist: a missing file then fails only that case
    (with a one-line error from ingest) instead of stopping the whole workflow."""
    return [p for p in CASE_FILES.get(wildcards.case, []) if Path(p).exists()]


def all_preprocessed(name):
    return expand(f"{RESULTS}/preprocess/{{case}}/{name}", case=CASES)


def preprocess_folder(wildcards, input):
    """The folder of the per-case caches, from the job's own declared inputs."""
    return str(Path(input.info[0]).parent.parent)


def synthetic_manifest_if_needed(wildcards):
    """The fold's synthetic manifest (one path) for t3/t5; nothing (empty string) otherwise."""
    if wildcards.scenario in SYNTHETIC_SCENARIOS:
        return f"{RESULTS}/fold_{wildcards.fold}/synthetic/manifest.csv"
    return []


def synthesis_qc(name):
    """The folds' synthesis QC file ``name``, when some scenario trains on synthetic data."""
    if not set(SCENARIOS) & SYNTHETIC_SCENARIOS:
        return []
    return expand(f"{RESULTS}/fold_{{fold}}/synthetic/qc/{name}", fold=FOLDS)


def final_targets():
    targets = [f"{RESULTS}/statistics/summary.csv", f"{RESULTS}/report.html"]
    if DEMO:
        targets.append(f"{RESULTS}/qc/skull_strip_dice.csv")
    return targets


def report_failed_cases(run_failed, snakemake_log=""):
    """results/failed_cases.csv, and its lines printed last on the console."""
    frame = write_failed_cases(RESULTS, set(CASES))
    print(failure_report(frame, RESULTS, run_failed, snakemake_log), file=sys.stderr)
