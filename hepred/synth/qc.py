"""Quality control of a fold's synthetic set: a montage, lesion HU statistics and their distance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from hepred import io
from hepred.preprocess import QC_WINDOW, apply_windows


def hu_stats_table(real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray]) -> pd.DataFrame:
    """Inside-lesion HU mean and SD, real vs synthetic, per source case and over all (case_id 'all')."""
    rows = []
    everything = ("all", np.concatenate(list(real.values())), np.concatenate(list(synthetic.values())))
    for case_id, real_values, synthetic_values in [*((c, real[c], synthetic[c]) for c in real), everything]:
        rows.append({"case_id": case_id, "real_mean": real_values.mean(), "real_sd": real_values.std(),
                     "synthetic_mean": synthetic_values.mean(), "synthetic_sd": synthetic_values.std(),
                     "mean_difference": synthetic_values.mean() - real_values.mean(),
                     "real_voxels": real_values.size, "synthetic_voxels": synthetic_values.size})
    return pd.DataFrame(rows)


def distribution_summary(real: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    return {"wasserstein_hu": float(wasserstein_distance(real, synthetic)),
            "mean_hu_difference": float(synthetic.mean() - real.mean()),
            "real_mean_hu": float(real.mean()), "synthetic_mean_hu": float(synthetic.mean()),
            "real_voxels": int(real.size), "synthetic_voxels": int(synthetic.size)}


def montage_figure(examples: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]]):
    """One row per source case: its real slice then synthetic versions of it, lesion contour in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(panels) for _, panels in examples)
    # Constrained layout puts the title right above the panels (no blank band under it).
    figure, axes = plt.subplots(
        len(examples), columns, figsize=(2.2 * columns, 2.3 * len(examples)), squeeze=False, layout="constrained"
    )
    for row, (case_id, panels) in enumerate(examples):
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if column >= len(panels):
                continue
            title, plane, lesion = panels[column]
            axis.imshow(apply_windows(plane, [QC_WINDOW])[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if lesion.any():
                axis.contour(lesion.astype(float), levels=[0.5], colors="red", linewidths=0.7)
            axis.set_title(f"{case_id} {title}" if column == 0 else title, fontsize=7)
    figure.suptitle(f"real (left) vs synthetic, window {QC_WINDOW['level']}/{QC_WINDOW['width']} HU", fontsize=8)
    return figure


def write_qc(qc_dir: Path, real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], examples) -> dict:
    qc_dir = Path(qc_dir)
    summary = distribution_summary(np.concatenate(list(real.values())), np.concatenate(list(synthetic.values())))
    io.write_csv(qc_dir / "hu_stats.csv", hu_stats_table(real, synthetic))
    io.write_json(qc_dir / "wasserstein.json", summary)
    io.save_figure(qc_dir / "montage.png", montage_figure(examples))
    return summary
