# The simulated demo cohort: used when config has no sample sheet.


rule simulate_demo:
    output:
        sheet=f"{config['demo']['out']}/samples.csv",
        truth=f"{config['demo']['out']}/truth.csv",
    log:
        f"{RESULTS}/logs/simulate_demo.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate_demo.tsv"
    conda:
        "../envs/hepred.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        demo=config["demo"],
    script:
        "../workflow_scripts/simulate_demo.py"


rule skull_strip_dice:
    input:
        truth=f"{config['demo']['out']}/truth.csv",
        masks=all_preprocessed("brain_mask.nii.gz"),
    output:
        report(
            f"{RESULTS}/qc/skull_strip_dice.csv",
            category="Quality control",
            caption="../report/skull_strip_dice.rst",
        ),
    log:
        f"{RESULTS}/logs/skull_strip_dice.log",
    conda:
        "../envs/hepred.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/skull_strip_dice.py"
