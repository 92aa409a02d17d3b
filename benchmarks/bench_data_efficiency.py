"""Does synthesis help when data is scarce? The best image model with and without synthetic CT,
trained on 25 %, 50 % and 100 % of each fold's training patients.

On the benchmark cohort's own folds (`configs/benchmark.yaml`, its finished run in
benchmark_results/), each fold's training patients are subsampled, stratified by label and
seeded by (seed, fold, size), keeping at least 3 of each class; the validation and test
patients are unchanged, so every size is scored on the same 200 out-of-fold patients. Each
smaller size is a run of its own (benchmarks/out/data_efficiency/train{NN}/, the ingested
cases hard-linked from the benchmark run, its own preprocess), with the per-fold generator
trained on the subsample only; 100 % is run the same way, so that every size runs the same
code (the benchmark run in benchmark_results/ may predate it).

The image model and its synthetic counterpart were fixed before this benchmark was run: t2
(augmentation), the best image scenario of the benchmark run, and t5 (augmentation +
synthetic CT), the same recipe with the fold generator's versions; t1 is the reference
every configuration names, but is not trained here. Per size: pooled AUC with its 95 % CI
(the statistics stage's bootstrap, its default settings),
t5 - t2 with DeLong's 95 % CI and p, one sentence, and the synthesis fidelity checks pooled
over the folds (class fidelity and TSTR, ``hepred.synth.fidelity``). CSV and PNG in
benchmarks/out/data_efficiency/.

    python benchmarks/bench_data_efficiency.py [--sizes 0.25 0.5 1.0] [--cores 2] [--json FILE]

Sizes not named keep their row from an earlier run's CSV with the same --seed, so sizes can be run
one at a time. A size's run time is Snakemake's, summed over the invocations that ran it; the
first size run also preprocesses the 200 cases, the later ones reuse its caches.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import harness
import numpy as np
import pandas as pd
from harness import CACHE, REPO, Figure

from hepred import io
from hepred.report import fidelity_table
from hepred.stats import bootstrap_ci, delong_test, load_predictions, resolve_config

BASE = REPO / "benchmark_results"
OUT = CACHE / "data_efficiency"
WITHOUT, WITH = "t2", "t5"
MIN_PER_CLASS = 3


def subsample_splits(splits: dict, labels: dict[str, int], size: float, seed: int) -> dict:
    """The folds with each training list cut to ``size`` of its patients, stratified by label."""
    folds = []
    for index, fold in enumerate(splits["folds"]):
        rng = np.random.default_rng([seed, index, round(size * 1000)])
        kept = []
        for label in (0, 1):
            cases = sorted(case for case in fold["train"] if labels[case] == label)
            count = min(len(cases), max(MIN_PER_CLASS, round(size * len(cases))))
            kept += rng.choice(cases, size=count, replace=False).tolist()
        folds.append({**fold, "train": sorted(kept)})
    return {**splits, "folds": folds}


def run_size(size: float, cores: int, seed: int, donor: Path | None) -> tuple[Path, float]:
    """The run of one training size (resumed where it stopped); its results folder and its run time
    (``logged_seconds``: summed over the invocations that ran it, so a resumed run counts whole).
    The ingested cases are hard-linked from the benchmark run, and the preprocessed ones from
    ``donor`` (an earlier size's run) when given: every size trains on the same caches."""
    out = OUT / f"train{round(size * 100):02d}"
    out.mkdir(parents=True, exist_ok=True)
    for name, source in (("ingest", BASE), ("preprocess", donor), ("labels.csv", donor)):
        if source is not None and (source / name).exists() and not (out / name).exists():
            subprocess.run(["cp", "-al", str(source / name), str(out / name)], check=True)
    labels = pd.read_csv(BASE / "labels.csv", dtype={"case_id": str}).set_index("case_id")["label"].astype(int)
    splits_file = out / "training_subsample_splits.json"
    io.write_json(splits_file, subsample_splits(io.read_json(BASE / "folds" / "splits.json"), labels.to_dict(), size, seed))
    overlay = out / "config.yaml"
    overlay.write_text(
        f"results: {out}\n"
        f"folds: {{splits_file: {splits_file}}}\n"
        f"classifier: {{scenarios: [t1, {WITHOUT}, {WITH}]}}\n"
        "baselines: {models: [], null_control: '', fusion: ''}\n"
    )
    # Only the two compared scenarios' predictions and the synthesis fidelity checks: t1 (which
    # a configuration must name) and the statistics stage are not needed here.
    fidelity = [out / f"fold_{k}" / "synthetic" / "qc" / "fidelity.json" for k in range(len(io.read_json(splits_file)["folds"]))]
    command = [sys.executable, "-m", "snakemake", *map(str, prediction_files(out, splits_file) + fidelity), "--cores", str(cores),
               "--configfile", "configs/benchmark.yaml", str(overlay), "--rerun-triggers", "mtime",
               "--quiet", "rules"]
    # The log, and so the run time, starts afresh with the size's first fold output.
    started = any(path.is_file() for path in out.glob("fold_*/**/*"))
    with open(out / "snakemake.log", "a" if started else "w") as log:
        subprocess.run(command, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out, logged_seconds(out / "snakemake.log")


def logged_seconds(log: Path) -> float:
    """Snakemake's "Elapsed time: [D days, ]H:MM:SS" of every invocation in ``log``, summed. An
    invocation that found nothing to do prints none; one killed outright (SIGKILL) prints none
    either, and its finished jobs are not counted."""
    total = 0.0
    pattern = r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d+):([\d.]+)$"
    for match in re.finditer(pattern, log.read_text(), flags=re.MULTILINE):
        days, hours, minutes, seconds = match.groups()
        total += 86400 * int(days or 0) + 3600 * int(hours) + 60 * int(minutes) + float(seconds)
    return total


def prediction_files(results: Path, splits_file: Path) -> list[Path]:
    return [results / f"fold_{k}" / "classifier" / scenario / "predictions_patients.csv"
            for k in range(len(io.read_json(splits_file)["folds"])) for scenario in (WITHOUT, WITH)]


def compare(results: Path, size: float, seconds: float) -> dict:
    """AUCs with the statistics stage's bootstrap CI (its defaults: mean rule, seed 0), and t5 - t2."""
    cfg = resolve_config(None)
    frame = load_predictions(prediction_files(results, results / "folds" / "splits.json"), cfg["probability_column"])
    wide = frame.pivot(index="case_id", columns="scenario", values="probability")
    labels = frame.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "label"].to_numpy()
    test = delong_test(labels, wide[WITH].to_numpy(), wide[WITHOUT].to_numpy())
    half_width = 1.959964 * math.sqrt(max(test["variance_a"] + test["variance_b"] - 2 * test["covariance"], 0.0))
    row = {"training_size": size, "patients_scored": len(wide), "run_seconds": seconds}
    for scenario, auc in ((WITHOUT, test["auc_b"]), (WITH, test["auc_a"])):
        low, high = bootstrap_ci(labels, wide[scenario].to_numpy(), "auc", cfg["threshold"], cfg["bootstrap"], cfg["ci"],
                                 cfg["ci_method"], cfg["seed"])
        row.update({f"{scenario}_auc": auc, f"{scenario}_ci_low": low, f"{scenario}_ci_high": high})
    row.update({"difference": test["auc_difference"], "difference_ci_low": test["auc_difference"] - half_width,
                "difference_ci_high": test["auc_difference"] + half_width, "delong_p": test["p"]})
    qc = sorted(results.glob("fold_*/synthetic/qc/fidelity.json"))
    if qc:
        pooled = fidelity_table(qc, [path.with_name("fidelity_logits.csv") for path in qc]).set_index("fold").loc["pooled"]
        for column in ("class_fidelity_auc", "class_fidelity_real_reference_auc", "tstr_validation_auc",
                       "trtr_validation_auc"):
            row[column] = float(pooled[column])
    helped = "helped" if row["difference_ci_low"] > 0 else "hurt" if row["difference_ci_high"] < 0 else "did not clearly help"
    row["sentence"] = (
        f"{round(size * 100)} % of the training patients: synthesis {helped} "
        f"({WITH} {row[f'{WITH}_auc']:.3f} vs {WITHOUT} {row[f'{WITHOUT}_auc']:.3f}, difference "
        f"{row['difference']:+.3f} [{row['difference_ci_low']:+.3f}, {row['difference_ci_high']:+.3f}], "
        f"DeLong p = {row['delong_p']:.3f})."
    )
    return row


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6), layout="constrained")
    x = 100 * table["training_size"]
    for scenario, offset, name in ((WITHOUT, -1.2, "without synthesis (t2)"), (WITH, 1.2, "with synthesis (t5)")):
        centre = table[f"{scenario}_auc"]
        errors = [centre - table[f"{scenario}_ci_low"], table[f"{scenario}_ci_high"] - centre]
        axis.errorbar(x + offset, centre, yerr=errors, marker="o", capsize=3, label=name)
    axis.axhline(0.5, color="grey", lw=0.8, ls=":")
    axis.set_xticks(x, [f"{v:.0f} %" for v in x])
    axis.set_xlabel("training patients per fold")
    axis.set_ylabel("pooled AUC (95 % CI)")
    axis.legend(fontsize=8)
    with io.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def main() -> None:
    parser = harness.base_parser(__doc__)
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (BASE / "folds" / "splits.json").is_file():
        sys.exit("bench_data_efficiency: run the benchmark first: snakemake --cores N --configfile configs/benchmark.yaml")
    # A size run earlier with the same seed keeps its row (and its measured run time) when only
    # other sizes are run now.
    sizes = sorted(set(args.sizes))
    table_file = OUT / "data_efficiency.csv"
    frames = []
    if table_file.is_file():
        earlier = pd.read_csv(table_file)
        if "seed" in earlier:
            frames.append(earlier[(earlier["seed"] == args.seed) & ~earlier["training_size"].round(6).isin(sizes)])
    rows, figures = [], []
    donor = next((run for run in sorted(OUT.glob("train*")) if (run / "preprocess").is_dir()), None)
    for size in sizes:
        results, seconds = run_size(size, args.cores, args.seed, donor)
        donor = results
        rows.append({**compare(results, size, seconds), "seed": args.seed})
        print(rows[-1]["sentence"], flush=True)
    table = pd.concat([*frames, pd.DataFrame(rows)]).sort_values("training_size", ignore_index=True)
    rows = table.to_dict("records")
    OUT.mkdir(parents=True, exist_ok=True)
    io.write_csv(table_file, table)
    plot(table, OUT / "data_efficiency.png")
    for row in rows:
        percent = round(row["training_size"] * 100)
        figures += [
            Figure(f"data_efficiency_{percent}_{WITHOUT}_auc", row[f"{WITHOUT}_auc"], "", ""),
            Figure(f"data_efficiency_{percent}_{WITH}_auc", row[f"{WITH}_auc"], "", ""),
            Figure(f"data_efficiency_{percent}_difference", row["difference"], "", "", row["sentence"]),
        ]
        if math.isfinite(row["run_seconds"]):
            figures.append(Figure(f"data_efficiency_{percent}_run_s", row["run_seconds"], "", "s"))
    harness.finish(figures, args.json, "synthesis by training size (benchmark cohort)")
    print(f"table: {OUT / 'data_efficiency.csv'}; plot: {OUT / 'data_efficiency.png'}")


if __name__ == "__main__":
    main()
