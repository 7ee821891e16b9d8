"""`facerestore evaluate`: score restored images against references with the metrics suite.

Predictions and references are paired by file stem (extension and its case do not matter); pairs of
different sizes are skipped with a reason, as are unreadable files. No-reference metrics (e.g. niqe)
need no ``--gt``. A summary table goes to stdout; ``--out`` writes the full report (JSON) and ``--csv``
one row per image, both atomically. Exit 0 when every prediction was scored, 1 when some were skipped (no
reference of that name, another size, unreadable) or a name was ambiguous (two predictions or two references with
one stem: the file used is named); each is reported on stderr; 2 on bad input or missing weights. References
without a prediction (a subset scored against a whole dataset) are reported, not counted.
``--out`` / ``--csv`` are checked before any scoring: a path that is one of the input images (symlinks and hard
links included), a folder, device, FIFO or symbolic link, or that lies in a folder that cannot be written is
refused (exit 2).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "score restored images against references (PSNR, SSIM, LPIPS, FED, NIQE, FID, ...)"
EXAMPLES = """\
  facerestore evaluate --list
  facerestore evaluate --pred results/ --gt faces/ --metrics psnr,ssim,lpips
  facerestore evaluate --pred results/ --metrics niqe --out report.json --csv per_image.csv
  facerestore evaluate --pred sr/ --gt hr/ --metrics psnr_y,ssim_y --crop-border 4
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", help="folder (or file) of restored images")
    p.add_argument("--gt", default=None, help="folder of reference images, paired with --pred by file stem")
    p.add_argument("--metrics", default="psnr,ssim",
                   help="comma-separated metric names (default psnr,ssim; see --list)")
    p.add_argument("--out", default=None, help="write the full report as JSON to this file")
    p.add_argument("--csv", default=None, help="write per-image scores as CSV to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed from each side before scoring")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (same-size images only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the metrics with kind, direction, range and weights")


def format_metric_list() -> str:
    """One line per registered metric: name, kind, direction, range, weights it needs."""
    from facerestore.metrics.registry import SPECS

    def num(v: float) -> str:
        return ("-inf" if v < 0 else "inf") if math.isinf(v) else f"{v:g}"

    lines = [f"{'name':14s} {'kind':15s} {'better':7s} {'range':12s} weights / description"]
    for s in SPECS:
        rng = f"[{num(s.score_range[0])}, {num(s.score_range[1])}]"
        weights = ",".join(s.weights) if s.weights else "-"
        lines.append(f"{s.name:14s} {s.kind:15s} {'lower' if s.lower_better else 'higher':7s} {rng:12s} "
                     f"{weights}  ({s.description})")
    return "\n".join(lines)


def format_summary(report: dict) -> str:
    """The summary table printed to stdout."""
    from facerestore.io import display_path

    lines = [f"{'metric':14s} {'':2s} {'mean':>12s} {'std':>12s} {'count':>6s} {'undef':>6s}"]
    notes: list[str] = []
    for name, s in report["summary"].items():
        arrow = "v" if report["metric_info"][name]["lower_better"] else "^"
        if "value" in s:  # distribution metric: one number over the whole set
            lines.append(f"{name:14s} {arrow:2s} {s['value']:12.4f} {'':>12s} {s['count']:6d} {s['n_undefined']:6d}")
        elif "n_infinite" in s and s["n_infinite"] == s["count"]:
            lines.append(f"{name:14s} {arrow:2s} {'inf':>12s} {'':>12s} {s['count']:6d} {s['n_undefined']:6d}")
            notes.append(f"{name}: every pair is identical (infinite score)")
        elif "n_infinite" in s:  # identical pairs (PSNR inf): the finite scores' mean, and how many were left out
            lines.append(f"{name:14s} {arrow:2s} {s['finite_mean']:12.4f} {s['finite_std']:12.4f} {s['count']:6d} "
                         f"{s['n_undefined']:6d}")
            notes.append(f"{name}: {s['n_infinite']} of {s['count']} score(s) infinite (identical pair); "
                         f"mean and std are over the other {s['count'] - s['n_infinite']}")
        else:
            lines.append(f"{name:14s} {arrow:2s} {s['mean']:12.4f} {s['std']:12.4f} {s['count']:6d} "
                         f"{s['n_undefined']:6d}")
    lines.extend(notes)
    lines.append(f"{report['n_scored']} image(s) scored"
                 + (f" against {display_path(report['gt_dir'])}" if report["gt_dir"] else ""))
    return "\n".join(lines)


def per_image_csv(report: dict) -> str:
    """CSV text: name, pred, gt, then one column per per-image metric (NaN written as 'nan')."""
    import csv
    import io

    cols = [n for n in report["metrics"] if report["metric_info"][n]["kind"] != "distribution"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "pred", "gt", *cols])
    for row in report["per_image"]:
        w.writerow([row["name"], row["pred"], row["gt"] or "", *[repr(float(row["scores"][c])) for c in cols]])
    return buf.getvalue()


def _nan_to_none(obj):
    """Standard JSON (NaN and Infinity are not JSON, and other parsers refuse them): undefined scores become null,
    +-inf the strings "inf" / "-inf" (``float("inf")`` reads them back; identical images have PSNR inf)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    import sys

    from facerestore.cli.guards import note_ignored
    from facerestore.errors import InputError, OutputError
    from facerestore.io import (
        atomic_write_json,
        atomic_write_text,
        check_output_dir,
        check_output_file,
        display_path,
        list_images,
        same_file,
    )
    from facerestore.metrics.evaluate import evaluate_folders
    from facerestore.nn.devices import resolve_device

    if args.list:
        print(format_metric_list())
        return 0
    if not args.pred:
        raise InputError("missing --pred DIR (or use --list)")
    metrics = [m for m in args.metrics.split(",") if m.strip()]
    from facerestore.metrics import registry

    for m in metrics:  # options first: an unknown metric is named before the folders are read
        registry.get_spec(m.strip().lower())
    # outputs are checked before any scoring: never one of the inputs, never a device, FIFO or link
    inputs = list_images(args.pred, on_skip=note_ignored)
    if args.gt is not None:
        inputs += list_images(args.gt, on_skip=note_ignored)
    if args.out and args.csv and (args.out == args.csv or same_file(args.out, args.csv)):
        raise InputError(f"--out and --csv name the same file: {display_path(args.out)}")
    for flag, target in (("--out", args.out), ("--csv", args.csv)):
        if target:
            try:
                check_output_file(target, inputs)
                check_output_dir(Path(target).absolute().parent)
            except OutputError as exc:
                raise OutputError(f"{flag}: {exc}") from None
    report = evaluate_folders(
        args.pred,
        args.gt,
        metrics=metrics,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        crop_border=args.crop_border,
        progress=not args.quiet,
    )
    for f in report["unmatched_pred"]:
        print(f"unmatched prediction (no reference with this name): {display_path(f)}", file=sys.stderr)
    extra = report["unmatched_gt"]  # a subset scored against a whole dataset: normal, said in one line when many
    for f in extra if len(extra) <= 5 else []:
        print(f"unmatched reference (no prediction with this name): {display_path(f)}", file=sys.stderr)
    if len(extra) > 5:
        print(f"{len(extra)} references have no prediction with their name (e.g. {display_path(extra[0])}); "
              "not counted as failures", file=sys.stderr)
    # a prediction without its reference was not scored: a failure like an unreadable file
    failed = report["size_mismatch"] + report["unreadable"] + report["duplicates"]
    unscored = len(failed) + len(report["unmatched_pred"])
    for item in failed:
        print(f"skipped {display_path(item.get('path') or item.get('pred'))}: {item['reason']}", file=sys.stderr)
    for e in report["errors"]:
        print(f"error {e['metric']} on {display_path(e['name'])}: {e['reason']}", file=sys.stderr)
    print(format_summary(report))
    if args.out:
        atomic_write_json(args.out, _nan_to_none(report))
    if args.csv:
        atomic_write_text(args.csv, per_image_csv(report))
    if report["n_scored"] == 0:
        raise InputError("no image could be scored (see the messages above)")
    return 1 if unscored or report["errors"] else 0
