"""`facerestore faces`: find, align and crop the faces of photos into a dataset.

For every input image the detector finds faces (with dlib's 68 landmarks), ``faces.align.align_face``
warps each onto the FFHQ 5-point template at ``--size`` and the crop is written as ``STEM_00.png``,
``STEM_01.png`` ... (faces in detection order: score, then x) next to ``STEM_00.json`` holding the box,
score, the 5 and 68 landmarks in source and crop coordinates and the image->crop affine. Unreadable
files are reported and skipped (exit code 1); images without faces are reported (exit code 0). Every
write is atomic and an input file is never overwritten: the output folder must not be the input folder
(nor lie inside it with ``-r``), and inputs sharing a stem get unique, reported names.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "find, align and crop faces into a dataset (crops + landmarks JSON)"
EXAMPLES = """\
  facerestore faces -i photos/ -o crops/
  facerestore faces -i "group photo.JPG" -o crops/ --size 256 --largest
  facerestore faces -i photos/ -o crops/ --detector cnn --upsample 0 --border ffhq
  facerestore faces -i photos/ -o crops/ --detector hog      # no zoo weights: dlib only
"""

DETECTOR_CHOICES = ("hog", "cnn", "dlib-hog", "dlib-cnn", "retinaface", "yunet", "scrfd", "auto")
BORDER_CHOICES = ("constant", "reflect", "ffhq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder for crops and landmark JSON files")
    p.add_argument("--size", type=int, default=512, help="crop side in pixels (default 512)")
    p.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto",
                   help="auto (default, as for restore: retinaface when its weights are cached, else hog), "
                   "hog / dlib-hog (dlib HOG, fast; also fires on round badges and patches), cnn / dlib-cnn "
                   "(dlib MMOD CNN, slower, more poses), retinaface or yunet (zoo weights), scrfd (zoo weights, "
                   "optional, research-only)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--all", dest="select", action="store_const", const="all", help="every face (default)")
    sel.add_argument("--largest", dest="select", action="store_const", const="largest",
                     help="only the largest face of each image")
    sel.add_argument("--center", dest="select", action="store_const", const="center",
                     help="only the face nearest the image centre")
    p.set_defaults(select="all")
    p.add_argument("--min-size", type=float, default=32, help="ignore faces smaller than this (pixels; default 32)")
    p.add_argument("--upsample", type=int, default=1,
                   help="dlib detectors: upsample the photo N times to find small faces (default 1)")
    p.add_argument("--threshold", "--min-score", dest="threshold", type=float, default=None,
                   help="detector score threshold (default: the detector's calibrated one, see "
                   "facerestore.faces.detect.DEFAULT_SCORE_THRESHOLDS)")
    p.add_argument("--max-side", type=int, default=None,
                   help="dlib detectors: detect on a copy at most this many pixels on its longer side (faster)")
    p.add_argument("--border", choices=BORDER_CHOICES, default="constant",
                   help="fill outside the photo: constant gray, reflect, or ffhq (reflect + blur, FFHQ recipe)")
    p.add_argument("--scale", type=float, default=1.0, help="face size relative to the FFHQ template (default 1)")
    p.add_argument("--ext", default=".png", help="crop format: .png (default, keeps 16-bit inputs) or .jpg")
    p.add_argument("-r", "--recursive", action="store_true", help="also read sub-folders (mirrored in the output)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _make_detector(args: argparse.Namespace) -> Any:
    from facerestore.cli.guards import check_finite
    from facerestore.errors import InputError
    from facerestore.faces.detect import canonical_detector_name, create_detector

    if not 0 <= args.upsample <= 4:
        raise InputError(f"--upsample must be in 0..4, got {args.upsample}")
    if not 16 <= args.size <= 4096:
        raise InputError(f"--size must be 16..4096 pixels, got {args.size}")
    check_finite("--min-size", args.min_size, low=0)
    check_finite("--threshold", args.threshold)
    check_finite("--scale", args.scale, low=0, high=16, low_open=True)
    if args.max_side is not None and args.max_side < 32:  # the detectors' own minimum (faces.detect)
        raise InputError(f"--max-side must be at least 32 pixels, got {args.max_side}")
    kw: dict[str, Any] = {"min_size": args.min_size}
    if args.threshold is not None:
        kw["threshold"] = args.threshold
    name = canonical_detector_name(args.detector)
    if name in ("dlib-hog", "dlib-cnn"):
        kw.update(upsample=args.upsample, landmarks=68, max_side=args.max_side)
    else:
        kw.update(landmarks=68)
        idle = [opt for opt, given in (("--upsample", args.upsample != 1), ("--max-side", args.max_side is not None))
                if given]
        if idle:  # never silently ignored
            import sys

            print(f"note: {' and '.join(idle)} act on the dlib detectors only; {name} finds small faces without "
                  "them (use --detector hog or cnn to apply them)", file=sys.stderr)
    return create_detector(args.detector, **kw)


def _output_stems(files: list[Path], root: Path) -> dict[Path, Path]:
    """Output path stem (folder / name) per input, unique (stems shared by two inputs get the extension
    appended, then a number) and short enough for ``STEM_NN.json``; renames are reported."""
    from facerestore.cli.guards import unique_stems

    rel = {f: (f.relative_to(root) if root.is_dir() else Path(f.name)) for f in files}
    return unique_stems(files, {f: r.parent / r.stem for f, r in rel.items()}, reserve=len("_000.jpeg"))


def run(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from facerestore import io
    from facerestore.cli.common import run_batch
    from facerestore.cli.guards import check_output_location, note_ignored, say
    from facerestore.errors import InputError
    from facerestore.faces.align import align_face, transform_points
    from facerestore.faces.detect import select_faces

    src = Path(args.input)
    out_dir = Path(args.output)
    ext = args.ext if args.ext.startswith(".") else "." + args.ext
    if ext.lower() not in io.IMAGE_EXTENSIONS:
        raise InputError(f"unsupported --ext {args.ext!r}; use one of {', '.join(io.IMAGE_EXTENSIONS)}")
    files = io.list_images(src, recursive=args.recursive, on_skip=note_ignored)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output is not a folder: {io.display_path(out_dir)}")
    check_output_location(out_dir, src, files, recursive=args.recursive)
    detector = _make_detector(args)
    stems = _output_stems(files, src)
    protect = [str(f) for f in files]
    io.check_output_dir(out_dir)
    no_face: list[Path] = []

    def process(path: Path) -> int:
        loaded = io.read_image(path)
        if loaded.pages > 1:
            say(f"note: {io.display_path(path)} holds {loaded.pages} pages: faces are taken from the first")
        image = loaded.rgb
        faces = select_faces(detector.detect(image), args.select, image.shape)
        if not faces:
            no_face.append(path)
            say(f"no face found: {io.display_path(path)}")
            return 0
        stem = out_dir / stems[path]
        for k, face in enumerate(faces):
            aligned = align_face(image, face.landmarks5, size=args.size, border=args.border, scale=args.scale)
            name = f"{stem.name}_{k:02d}"
            crop_path = stem.parent / f"{name}{ext}"
            bit_depth = loaded.bit_depth if ext.lower() in (".png", ".tif", ".tiff") else 8
            io.write_image(crop_path, aligned.crop, bit_depth=bit_depth, protect=protect,
                           metadata=loaded.metadata.for_crops())  # the crop's pixels are in the photo's colour space
            lm68 = face.landmarks68
            record = {
                "source": str(path),
                "source_size": [int(image.shape[1]), int(image.shape[0])],
                "crop": crop_path.name,
                "face_index": k,
                "size": int(args.size),
                "detector": face.detector or args.detector,
                "score": float(face.score),
                "box": [float(v) for v in face.box],
                "landmarks5": {
                    "source": np.asarray(face.landmarks5).tolist(),
                    "crop": transform_points(face.landmarks5, aligned.affine).tolist(),
                },
                "landmarks68": None if lm68 is None else {
                    "source": np.asarray(lm68).tolist(),
                    "crop": transform_points(lm68, aligned.affine).tolist(),
                },
                "affine": np.asarray(aligned.affine).tolist(),
                "inverse": np.asarray(aligned.inverse).tolist(),
                "border": args.border,
                "scale": float(args.scale),
                "template": "ffhq-5point",
            }
            json_path = stem.parent / f"{name}.json"
            io.check_output_file(json_path, protect)
            io.atomic_write_json(json_path, record)
        return len(faces)

    report = run_batch(files, process, desc="faces", progress=not args.quiet, single=src.is_file())
    n_crops = sum(report.done)
    print(f"wrote {n_crops} face crops from {sum(1 for n in report.done if n)} of {len(files)} images to "
          f"{io.display_path(out_dir)}" + (f"; {len(no_face)} without faces" if no_face else "")
          + (f"; {len(report.failed)} failed" if report.failed else ""), file=sys.stderr)
    return report.exit_code
