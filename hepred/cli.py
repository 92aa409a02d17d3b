"""`hepred` command line: simulate a demo cohort, convert DICOM, predict new cases."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import version as package_version
from pathlib import Path

from hepred.errors import HepredError


def _simulate(args: argparse.Namespace) -> None:
    from hepred.simulate import simulate_cohort

    sheet = simulate_cohort(
        args.out,
        n=args.n,
        seed=args.seed,
        matrix=args.matrix,
        pixel_mm=args.pixel_mm,
        slice_mm=args.slice_mm,
        n_slices=args.slices,
        tilt_fraction=args.tilt_fraction,
        workers=args.workers,
    )
    print(f"wrote {sheet}")


def _dicom2nifti(args: argparse.Namespace) -> None:
    from hepred.dicom import dicom_to_nifti

    if not args.out.name.endswith((".nii", ".nii.gz")):
        raise HepredError("the output must be a NIfTI file (.nii or .nii.gz)", path=args.out)
    meta = dicom_to_nifti(args.dicom_dir, args.out, series_uid=args.series)
    print(f"wrote {args.out} ({meta.get('n_slices', '?')} slices, tilt {meta.get('tilt_deg', 0):.1f} deg)")


def _predict(args: argparse.Namespace) -> int:
    from hepred.config import load_config
    from hepred.predict import predict

    frame = predict(
        config=load_config(args.config) if args.config else None,
        models_dir=args.models,
        input_path=args.input,
        out_csv=args.out,
        scenario=args.scenario,
        lesion=args.lesion,
        work_dir=args.work_dir,
        explain_dir=args.explain,
    )
    print(frame.to_string(index=False))
    failed = int(frame["error"].notna().sum())
    if failed:  # the others are written: a partial result, so not a clean exit
        print(
            f"hepred: {failed} of {len(frame)} case(s) could not be scored (errors above); wrote {args.out}",
            file=sys.stderr,
        )
        return 1
    return 0


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option that has a default says it at the end of its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        has_default = not any(action.default is absent for absent in (None, False, argparse.SUPPRESS))
        if action.option_strings and has_default and "(default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hepred", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hepred {package_version('hepred')}")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate", formatter_class=HelpWithDefaults, help="write a simulated demo cohort (DICOM, masks, truth)"
    )
    simulate.add_argument("--out", type=Path, required=True, help="folder of the cohort (samples.csv, truth.csv, cases)")
    simulate.add_argument("--n", type=int, default=40, help="patients")
    simulate.add_argument("--seed", type=int, default=0, help="cohort seed")
    simulate.add_argument("--matrix", type=int, default=512, help="in-plane pixels")
    simulate.add_argument("--pixel-mm", type=float, default=0.45, help="field of view = matrix x pixel >= 215 mm")
    simulate.add_argument("--slice-mm", type=float, default=5.0, help="slice spacing")
    simulate.add_argument("--slices", type=int, default=28, help="(slices - 1) x slice >= 125 mm")
    simulate.add_argument("--tilt-fraction", type=float, default=0.3, help="share of series with gantry tilt")
    simulate.add_argument("--workers", type=int, default=1, help="processes that render cases")
    simulate.set_defaults(func=_simulate)

    convert = commands.add_parser(
        "dicom2nifti", formatter_class=HelpWithDefaults, help="convert one axial CT series to NIfTI in HU"
    )
    convert.add_argument("dicom_dir", type=Path, help="folder of the series' DICOM files")
    convert.add_argument("out", type=Path, help="NIfTI file to write (.nii or .nii.gz)")
    convert.add_argument("--series", default=None, help="SeriesInstanceUID (default: the largest axial CT series)")
    convert.set_defaults(func=_dicom2nifti)

    predict = commands.add_parser(
        "predict", formatter_class=HelpWithDefaults, help="apply a scenario's fold models to new cases"
    )
    predict.add_argument("--models", type=Path, required=True, help="results directory of a finished run")
    predict.add_argument(
        "--input",
        type=Path,
        required=True,
        help="sample sheet (CSV, TSV or .xlsx), or a CT: DICOM folder or NIfTI (with --lesion)",
    )
    predict.add_argument("--lesion", type=Path, default=None, help="lesion mask NIfTI when --input is a DICOM folder")
    predict.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    predict.add_argument(
        "--scenario",
        default="t5",
        help="whose fold models score the cases: an image scenario (t1, t2, t3, t5), fusion, radiomics or volume",
    )
    predict.add_argument(
        "--work-dir", type=Path, default=None, help="where ingest/preprocess outputs go (default: a temporary folder)"
    )
    predict.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write Grad-CAM maps of the image models into DIR: per case a PNG of its most predictive "
        "slices and a NIfTI overlay on its CT grid (default: none)",
    )
    predict.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the run's config: device, threshold, slice aggregation, lesion labels (default: the run's own "
        "rule and threshold, from MODELS/statistics/metrics.json)",
    )
    predict.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except HepredError as error:
        print(f"hepred: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
