"""``results/report.html``: one self-contained page a researcher can open, read and share.

What was run (cohort, scenarios, settings, versions, date), the results table with
intervals and raw and adjusted p-values, ROC curves, every patient's out-of-fold
predictions, Grad-CAM maps, training curves, synthesis QC and the preprocessing QC
montages. Figures are embedded as reduced JPEG so the page stays small (a few MB for the
demo); the full-size PNGs stay in ``results/``.
"""

from __future__ import annotations

import base64
import datetime
import html
import io as bytes_io
import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score
from PIL import Image

from hepred import io
from hepred.patient_rules import RULE_COLUMNS

REPORTED_PACKAGES = ("hepred", "snakemake", "torch", "timm", "monai", "pyradiomics-bhklab", "scikit-learn", "SimpleITK")
# Pixel widths of the embedded figures, by what they show.
WIDTHS = {"roc": 760, "montage": 380, "curve": 420, "synthesis": 520, "saliency": 560}
JPEG_QUALITY = 78
STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 40px;color:#1d2733}
h1{margin:18px 0 4px} h2{border-bottom:2px solid #d7dde4;padding-bottom:4px;margin-top:34px}
nav{position:sticky;top:0;background:#f4f6f9;padding:8px 10px;border-bottom:1px solid #d7dde4;font-size:14px}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #d7dde4;padding:3px 7px;text-align:right}
th{background:#eef1f5} td:first-child,th:first-child,td:nth-child(2){text-align:left}
h2{scroll-margin-top:44px}
.facts td{text-align:left} .grid{display:flex;flex-wrap:wrap;gap:10px} figure{margin:0}
figcaption{font-size:12px;color:#55606d} .note{font-size:13px;color:#55606d;max-width:900px}
details{margin:8px 0} .scroll{max-height:460px;overflow:auto;display:inline-block}
"""


def _image(path: Path, width: int) -> str:
    """An <img> holding ``path`` scaled to at most ``width`` px, as an embedded JPEG."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        buffer = bytes_io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{encoded}" alt="{html.escape(path.name)}" width="{min(width, image.width)}">'


def _figure(path: Path, width: int, caption: str) -> str:
    return f"<figure>{_image(path, width)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _versions() -> str:
    parts = []
    for name in REPORTED_PACKAGES:
        try:
            parts.append(f"{name} {package_version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _p(value) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.3g}" if value >= 0.001 else "<0.001"


def fidelity_table(score_files: list[Path], logit_files: list[Path]) -> pd.DataFrame:
    """Class fidelity and TSTR per fold, and pooled over the folds (each volume scored by its
    fold's models; the real training cases by their out-of-fold logits)."""
    rows = [{**score, "notes": "; ".join(score.get("notes", []))} for score in map(io.read_json, score_files)]
    logits = pd.concat([pd.read_csv(path, dtype={"case_id": str}) for path in logit_files])

    def auc(group: str, column: str) -> float:
        chosen = logits[logits["group"] == group].dropna(subset=[column])
        return float(roc_auc_score(chosen["label"], chosen[column])) if chosen["label"].nunique() == 2 else float("nan")

    rows.append({
        "fold": "pooled", "method": rows[0]["method"],
        "synthetic_versions": sum(row["synthetic_versions"] for row in rows),
        "real_training_cases": sum(row["real_training_cases"] for row in rows),
        "real_validation_cases": sum(row["real_validation_cases"] for row in rows),
        "class_fidelity_auc": auc("synthetic", "real_model_logit"),
        "class_fidelity_real_reference_auc": auc("real", "real_model_logit"),
        "trtr_validation_auc": auc("validation", "real_model_logit"),
        "tstr_validation_auc": auc("validation", "synthetic_model_logit"),
        "notes": "",
    })
    columns = ["fold", "method", "synthetic_versions", "real_training_cases", "real_validation_cases",
               "class_fidelity_auc", "class_fidelity_real_reference_auc", "tstr_validation_auc", "trtr_validation_auc",
               "notes"]
    return pd.DataFrame(rows)[columns]


def fidelity_section(fidelity: dict[str, list[Path]]) -> str:
    table = fidelity_table(fidelity["scores"], fidelity["logits"])
    markers = pd.concat([pd.read_csv(path).assign(fold=path.parent.parent.parent.name) for path in fidelity["markers"]])
    spread = markers.pivot_table(index="marker", columns="group", values="label_difference_sd", aggfunc="mean")
    spread = spread.rename(columns=lambda group: f"{group}: expansion - none (SD), mean over folds").reset_index()
    return (
        "<h3>Does each synthetic CT carry its label?</h3><p class='note'>Radiomics model (the radiomics row's "
        "recipe) on the training cache's grid, on the slices synthesis repaints. Class fidelity: fitted on the "
        "fold's real training cases, it scores the synthetic versions, each by the model fitted without its source "
        "case (reference: the same models' out-of-fold AUC on the real training cases). TSTR: fitted on the synthetic versions only, scored on the fold's real validation "
        "patients, beside the model fitted on the real training cases (TRTR). Near 0.5, the synthetic versions do "
        "not carry their labels.</p>"
        + table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)
        + "<h3>Marker fidelity</h3><p class='note'>Standardised difference between labels of each lesion marker, "
        "in real training cases and in synthetic versions (fold_k/synthetic/qc/marker_fidelity.csv per fold): a "
        "synthetic set that flattens the difference shows a smaller value.</p>"
        + spread.to_html(index=False, float_format=lambda v: f"{v:.2f}", border=0)
        + "<div class='grid'>"
        + "".join(_figure(p, WIDTHS["synthesis"], p.parent.parent.parent.name) for p in fidelity["plots"])
        + "</div>"
    )


def results_table(summary: pd.DataFrame) -> str:
    """Every row of summary.csv: AUC with its interval, the other metrics and the paired tests."""
    rows = []
    for row in summary.itertuples(index=False):
        rows.append(
            "<tr>"
            f"<td>{html.escape(row.scenario)}</td><td>{html.escape(row.kind)}</td><td>{row.n_patients}</td>"
            f"<td><b>{row.auc:.3f}</b> [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]</td>"
            f"<td>{row.auc_fold_mean:.3f} &plusmn; {row.auc_fold_sd:.3f}</td>"
            f"<td>{row.accuracy:.3f}</td><td>{row.sensitivity:.3f}</td><td>{row.specificity:.3f}</td>"
            f"<td>{row.balanced_accuracy:.3f}</td>"
            f"<td>{_p(row.p_delong_vs_t1)}</td><td>{_p(row.p_delong_vs_t1_holm)}</td>"
            f"<td>{_p(row.p_delong_vs_best_image)}</td><td>{_p(row.p_delong_vs_best_image_holm)}</td>"
            f"<td>{_p(row.p_mcnemar_vs_t1)}</td><td>{_p(row.p_wilcoxon_vs_t1)}</td>"
            "</tr>"
        )
    header = (
        "<tr><th>scenario</th><th>kind</th><th>n</th><th>pooled AUC [95% CI]</th><th>fold AUC mean &plusmn; SD</th>"
        "<th>accuracy</th><th>sensitivity</th><th>specificity</th><th>balanced acc.</th>"
        "<th>DeLong p vs t1</th><th>Holm</th><th>DeLong p vs best image</th><th>Holm</th>"
        "<th>McNemar p vs t1</th><th>Wilcoxon p vs t1</th></tr>"
    )
    return f"<table>{header}{''.join(rows)}</table>"


def patient_table(prediction_files: list[Path], probability_column: str) -> pd.DataFrame:
    """One row per patient: label, test fold and each scenario's out-of-fold probability."""
    frames = [pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False) for path in prediction_files]
    long = pd.concat(frames)
    wide = long.pivot_table(index="case_id", columns="scenario", values=probability_column, sort=False)
    first = long.drop_duplicates("case_id").set_index("case_id")[["label", "fold"]]
    return first.join(wide[list(dict.fromkeys(long["scenario"]))]).sort_index().reset_index()


def _facts(config: dict, labels: pd.DataFrame, metrics: dict, environment: dict) -> str:
    classifier, synthesis = config["classifier"], config["synthesis"]
    n, positive = len(labels), int(labels["label"].sum())
    facts = [
        ("cohort", f"{n} patients, {positive} with hematoma expansion ({positive / n:.0%}); "
                   + ("simulated demo cohort" if not config["samples"] else f"sample sheet {config['samples']}")),
        ("label", f"growth > {config['labels']['growth_ml']} ml or > {config['labels']['growth_percent']} % "
                  "(baseline to follow-up), where follow-up masks are given"),
        ("cross-validation", f"{config['folds']['k']} folds, {config['folds']['val_fraction']:.0%} of each fold's "
                             f"training patients for validation, seed {config['seed']}"),
        ("rows", ", ".join(metrics["scenarios"])),
        ("image model", f"{classifier['model']} on "
                        + (f"a {classifier['crop']}-px lesion crop" if classifier["crop"] else "the whole slice")
                        + f" of the {config['preprocess']['size']}-px cache at {classifier['image_size']} px; up to "
                        f"{classifier['max_epochs']} epochs, lr {classifier['lr']}, {classifier['lr_schedule']} schedule"),
        ("synthesis", f"{synthesis['method']}, {synthesis['versions']} version(s) per training case, "
                      f"{synthesis['epochs']} epochs per fold generator"),
        ("statistics", f"patient rule {config['statistics']['aggregation']} (fixed before the results), threshold "
                       f"{config['statistics']['threshold']}, {config['statistics']['bootstrap']} bootstrap resamples"),
        ("software", _versions()),
        ("device and threads", f"{environment['device']} ({environment.get('device_name') or 'unnamed'}), "
                               f"CPU {environment.get('cpu_name') or 'not recorded'} with "
                               f"{environment.get('cpu_capability') or 'unrecorded'} kernels, "
                               f"{environment['threads']} thread(s) per training job (as fold 0's t1 model "
                               "records in its trained_with.json; every model has one)"),
        ("made", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
    ]
    return "<table class='facts'>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
    ) + "</table>"


def build_report(
    out_html: Path,
    config: dict,
    summary_csv: Path,
    summary_md: Path,
    metrics_json: Path,
    roc_png: Path,
    labels_csv: Path,
    trained_with: Path,
    prediction_files: list[Path],
    curves: list[Path],
    synthesis_montages: list[Path],
    preprocess_montages: list[Path],
    saliency_dirs: list[Path],
    fidelity: dict[str, list[Path]] | None = None,
) -> int:
    """Write the report; returns its size in bytes. ``fidelity`` holds the folds' synthesis
    fidelity files (``hepred.synth.fidelity``) by kind: scores, logits, markers, plots."""
    summary = pd.read_csv(summary_csv, keep_default_na=False, na_values=[""])
    metrics = json.loads(Path(metrics_json).read_text())
    labels = pd.read_csv(labels_csv, dtype={"case_id": str})
    rule = config["statistics"]["aggregation"]
    patients = patient_table(prediction_files, RULE_COLUMNS[rule])
    sections = [
        "<h1>hepred report</h1>",
        "<p class='note'>Hematoma expansion predicted from the baseline CT and its lesion mask; every row of the "
        "results is scored on the same cross-validation folds (out-of-fold predictions pooled). Full-size figures "
        "and every table are in the results folder.</p>",
        "<nav><a href='#run'>What was run</a><a href='#results'>Results</a><a href='#roc'>ROC</a>"
        "<a href='#patients'>Patients</a><a href='#saliency'>Saliency</a><a href='#training'>Training</a>"
        "<a href='#synthesis'>Synthesis QC</a><a href='#qc'>Preprocessing QC</a></nav>",
        f"<h2 id='run'>What was run</h2>{_facts(config, labels, metrics, io.read_json(trained_with)['environment'])}",
        "<h2 id='results'>Results</h2>",
        results_table(summary),
        "<p class='note'>kind: image (the paper's scenarios), fusion (the patient-level models with an image model), baseline "
        "(lesion volume, radiomics, clinical NCCT markers), null_control (the image recipe trained on permuted labels, scored against "
        "the true ones). Holm: adjusted within each family of comparisons; null controls are not in the families.</p>",
        f"<details open><summary>summary.md (the same results in words, with the methods paragraph)</summary>"
        f"<pre style='white-space:pre-wrap;font-size:12px'>{html.escape(Path(summary_md).read_text())}</pre></details>",
        f"<h2 id='roc'>ROC curves</h2>{_figure(roc_png, WIDTHS['roc'], 'pooled out-of-fold ROC per row')}",
        f"<h2 id='patients'>Per-patient out-of-fold predictions</h2><p class='note'>Probability of expansion under "
        f"the {rule} rule, from the fold that held the patient out.</p>"
        f"<div class='scroll'>{patients.to_html(index=False, float_format=lambda v: f'{v:.3f}', border=0)}</div>",
    ]
    saliency = []
    for folder in saliency_dirs:
        index = pd.read_csv(Path(folder) / "index.csv", dtype={"case_id": str})
        fold = Path(folder).parent.parent.name
        for row in index.itertuples(index=False):
            saliency.append(_figure(Path(folder) / row.png, WIDTHS["saliency"], f"{row.case_id} ({fold}, {Path(folder).name})"))
    sections.append(
        "<h2 id='saliency'>Saliency</h2><p class='note'>Grad-CAM of the fold model that held each patient out, on "
        "its most predictive slices; the NIfTI overlays on each patient's CT are in fold_k/saliency/.</p>"
        f"<div class='grid'>{''.join(saliency)}</div>"
    )
    sections.append(
        "<h2 id='training'>Training curves</h2><div class='grid'>"
        + "".join(_figure(p, WIDTHS["curve"], f"{p.parent.parent.parent.name} {p.parent.name}") for p in curves)
        + "</div>"
    )
    sections.append(
        "<h2 id='synthesis'>Synthesis QC</h2><p class='note'>Real (left) and synthetic versions of training cases, "
        "per fold; lesion HU statistics are in fold_k/synthetic/qc/.</p><div class='grid'>"
        + "".join(_figure(p, WIDTHS["synthesis"], p.parent.parent.parent.name) for p in synthesis_montages)
        + "</div>"
        + (fidelity_section(fidelity) if fidelity and fidelity["scores"] else "")
    )
    sections.append(
        "<h2 id='qc'>Preprocessing QC</h2><div class='grid'>"
        + "".join(_figure(p, WIDTHS["montage"], p.parent.name) for p in preprocess_montages)
        + "</div>"
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>hepred report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    with io.atomic_path(out_html) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(out_html).stat().st_size
