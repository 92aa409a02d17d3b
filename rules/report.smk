# results/report.html: the run on one page (settings, results, ROC, patients, saliency, QC).


rule html_report:
    input:
        summary=f"{RESULTS}/statistics/summary.csv",
        markdown=f"{RESULTS}/statistics/summary.md",
        metrics=f"{RESULTS}/statistics/metrics.json",
        roc=f"{RESULTS}/statistics/roc.png",
        labels=f"{RESULTS}/labels.csv",
        # The environment the reference models were trained in (threads, device, versions).
        trained_with=f"{RESULTS}/fold_0/classifier/t1/trained_with.json",
        predictions=expand(
            f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/predictions_patients.csv",
            fold=FOLDS,
            scenario=SCENARIOS,
        ),
        curves=expand(
            f"{RESULTS}/fold_{{fold}}/classifier/{{scenario}}/curve.png",
            fold=FOLDS,
            scenario=IMAGE_SCENARIOS + NULL_CONTROL,
        ),
        synthesis=synthesis_qc("montage.png"),
        fidelity=synthesis_qc("fidelity.json"),
        fidelity_logits=synthesis_qc("fidelity_logits.csv"),
        marker_fidelity=synthesis_qc("marker_fidelity.csv"),
        marker_plots=synthesis_qc("markers.png"),
        montages=all_preprocessed("montage.png"),
        saliency=expand(
            f"{RESULTS}/fold_{{fold}}/saliency/{SALIENCY_SCENARIO}", fold=FOLDS
        ),
    output:
        report(
            f"{RESULTS}/report.html",
            category="Overview",
            caption="../report/hepred_report.rst",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        # What the page says was run; the speed settings it reports come from trained_with.json.
        config=without_speed_settings(config),
    script:
        "../workflow_scripts/report.py"
