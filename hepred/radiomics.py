"""Radiomics features of a case's baseline CT inside its lesion mask (pyradiomics), per case.

Kept apart from the models (``hepred.baselines``) so that the per-case feature job imports
neither torch nor the classifier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from radiomics import featureextractor

from hepred.errors import HepredError

# pyradiomics' feature classes (IBSI-standard definitions): intensity, shape and texture.
FEATURE_CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
VOLUME_FEATURE = "original_shape_VoxelVolume"  # mm³


def radiomics_features(
    ct_path: Path, lesion_path: Path, case_id: str, settings: dict, user_files: dict | None = None
) -> pd.DataFrame:
    """pyradiomics features of the CT (HU) inside the lesion mask, on the CT's own grid, as one row.

    The CT is used at its native resolution: the markers of expansion (hypodense islands, the
    blend sign's edge, lobulation) are millimetres wide and would blur in the training cache.
    ``user_files`` maps the ingested copies to the user's files, which errors name instead.
    """
    try:
        return _features(Path(ct_path), Path(lesion_path), case_id, settings)
    except HepredError as error:
        raise error.naming_user_files(user_files) from None


def _features(ct_path: Path, lesion_path: Path, case_id: str, settings: dict) -> pd.DataFrame:
    return image_features(_read_image(ct_path, case_id), _read_image(lesion_path, case_id), case_id, settings, lesion_path)


def array_features(hu: np.ndarray, lesion: np.ndarray, spacing_xyz, case_id: str, settings: dict) -> pd.DataFrame:
    """The same features of a [Z, Y, X] HU volume and its lesion mask with this voxel spacing
    (x, y, z mm): a training-cache volume, real or synthetic (``hepred.synth.fidelity``)."""
    images = []
    for array in (hu.astype(np.float32), (lesion > 0).astype(np.uint8)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing([float(v) for v in spacing_xyz])
        images.append(image)
    return image_features(*images, case_id, settings)


def image_features(ct: sitk.Image, lesion: sitk.Image, case_id: str, settings: dict, lesion_path: Path | None = None) -> pd.DataFrame:
    """pyradiomics features of ``ct`` inside ``lesion`` (> 0), as one row."""
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    mask = sitk.Cast(lesion > 0, sitk.sitkUInt8)
    voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    if voxels == 0:
        raise HepredError("lesion mask is empty: no radiomics features", case_id=case_id, path=lesion_path)
    extractor = featureextractor.RadiomicsFeatureExtractor(
        binWidth=float(settings["bin_width"]),
        force2D=bool(settings["force_2d"]),
        force2Ddimension=0,
        label=1,
        additionalInfo=False,
    )
    extractor.disableAllFeatures()
    for name in FEATURE_CLASSES:
        extractor.enableFeatureClassByName(name)
    sigmas = [float(sigma) for sigma in settings.get("log_sigma_mm", [])]
    if sigmas:
        # Laplacian of Gaussian images (IBSI 2 filter): blobs and texture at these scales, above
        # the pixel noise that dominates the original image's finest texture.
        extractor.enableImageTypeByName("LoG", customArgs={"sigma": sigmas})
    try:
        values = extractor.execute(sitk.Cast(ct, sitk.sitkFloat32), mask)
    except (ValueError, RuntimeError) as error:
        raise HepredError(
            f"radiomics features failed: {str(error).splitlines()[0]}", case_id=case_id, path=lesion_path
        ) from None
    row = {
        name: feature_value(name, value, case_id, lesion_path)
        for name, value in values.items()
        if not name.startswith("diagnostics")
    }
    return pd.DataFrame([{"case_id": case_id, **row}])


def feature_value(name: str, value, case_id: str, lesion_path: Path | None = None) -> float:
    """One pyradiomics value as a float. The shape features take their axis lengths from
    np.linalg.eigvals, which answers complex numbers with round-off imaginary parts (1e-16)
    when two axes are equal: those read as their real part, a larger one is refused."""
    value = np.asarray(value)
    if np.iscomplexobj(value):
        if abs(value.imag) > 1e-9 * max(abs(value.real), 1.0):
            raise HepredError(f"radiomics feature {name} is complex ({complex(value):.3g})", case_id=case_id, path=lesion_path)
        value = value.real
    return float(value)


def _read_image(path: Path, case_id: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise HepredError(f"cannot read image: {str(error).splitlines()[0]}", case_id=case_id, path=path) from None
