"""`facerestore restore`: restore the faces of photos (or of aligned face crops) and paste them back.

Writes, under the output folder (the layout GFPGAN/CodeFormer users know):

- ``restored_imgs/STEM.EXT``: the whole photo, upscaled by ``--upscale`` with the restored faces pasted in,
  and ``restored_imgs/STEM.json``: faces (box, score, landmarks), identity similarity between each input
  and restored face, timings, method, fidelity, version;
- ``cropped_faces/STEM_NN.png``: the aligned input faces; ``restored_faces/STEM_NN.png``: the restored
  faces; ``cmp/STEM_NN.png``: both side by side;
- ``restored_videos/STEM.EXT`` and ``STEM.json`` for video inputs (.mp4 .mov .mkv .avi .webm in their own container;
  .mpg .vob .ts .mts .m2ts .dv .3gp .wmv .asf .flv .ogv into .mkv; PyAV):
  every frame restored with faces tracked and stabilised over time (``facerestore.video``), audio copied;
  animated GIF, WebP and PNG inputs the same way, into the same format (frame times, looping, transparency kept).

``--ext auto`` keeps the input's format (jpg stays jpg, png png, anything else becomes png; images with
alpha are always written as png). 16-bit and gray inputs are written back 16-bit / gray where the format
allows. Unreadable files are reported and skipped (exit code 1); an output folder that equals the input
folder, or any output that would replace an input file, is refused (exit code 2). Writes are atomic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "restore the faces in photos (detect, align, restore, paste back into the upscaled photo)"
EXAMPLES = """\
  facerestore restore -i photo.jpg -o results/
  facerestore restore -i "old photos/" -o results/ --upscale 1 --only-center-face
  facerestore restore -i crops/ -o results/ --aligned --fidelity 0.7 --device cuda --half
  facerestore restore -i clip.mp4 -o results/ --upscale 1 --crf 20
  facerestore restore -i frames/ -o results/ --sequence --fps 24
  facerestore restore -i old_photo.jpg -o results/ --method honestface --refs "photos of grandma/"
  facerestore restore --list-methods
"""

EXT_CHOICES = ("auto", "png", "jpg", "tif")  # io.OUTPUT_FORMATS, spelt here: --help imports no numpy
DETECTOR_CHOICES = ("auto", "retinaface", "dlib-hog", "dlib-cnn", "scrfd", "yunet", "hog", "cnn")
SUBFOLDERS = ("restored_imgs", "cropped_faces", "restored_faces", "cmp")
VIDEO_SUBFOLDER = "restored_videos"  # restored video inputs: STEM.EXT (same container) and STEM.json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="an image, video or animated GIF/WebP/PNG file, or a folder of them")
    p.add_argument("-o", "--output", help="output folder (restored_imgs/, cropped_faces/, restored_faces/, cmp/)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also read the input folder's sub-folders (their layout is mirrored under each output folder)")
    p.add_argument("--method", default="ispl", help="restoration method (default ispl; see --list-methods)")
    p.add_argument("--upscale", type=float, default=None,
                   help="scale of the output photo: round(upscale*H) x round(upscale*W) (default 2; with --aligned, "
                   "the method's own size, never smaller than the crop)")
    p.add_argument("--fidelity", type=float, default=None,
                   help="fidelity in [0, 1] for methods that have the knob (1 = closest to the input)")
    p.add_argument("--blend", type=float, default=1.0,
                   help="share of each restored face pasted over the original, in [0, 1] (default 1; 0 = the photo "
                   "only upscaled); multiplies the quality gate's share")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="paste every restored face even when the quality gate finds it less sharp, of worse NIQE or "
                   "another person than the face in the photo (by default such faces are blended toward the "
                   "original or kept as they were; restored_imgs/STEM.json says which and why). In videos the gate "
                   "decides per tracked face every 12 frames and fades between decisions (no flicker)")
    p.add_argument("--no-occlusion-guard", dest="occlusion_guard", action="store_false",
                   help="paste the whole restored face even where it differs from the photo at low spatial "
                   "frequencies (by default such areas, e.g. a hand, microphone or sunglasses the restorer "
                   "repainted, keep the photo's own pixels; restored_imgs/STEM.json gives each face's "
                   "occluded_share)")
    p.add_argument("--aligned", action="store_true",
                   help="inputs are already FFHQ-aligned square face crops: no detection, no paste-back")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    from facerestore.faces.detect import DEFAULT_SCORE_THRESHOLDS as thr

    p.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto",
                   help="face detector: auto (default: retinaface once `facerestore models download "
                   "retinaface-mnet025` has cached its weights, else dlib-hog), retinaface (MIT), dlib-hog (fast), "
                   "dlib-cnn (slow on CPU, more poses), scrfd (optional, research-only weights: `facerestore models "
                   "download scrfd-2.5g`), yunet (OpenCV's, `facerestore models download yunet-2023mar`); hog and cnn "
                   "are the old names of the dlib ones")
    p.add_argument("--min-score", type=float, default=None,
                   help="score threshold of the detector (its own scale); default: the detector's calibrated one "
                   f"(retinaface {thr['retinaface']:g} face probability, dlib-hog {thr['hog']:g} SVM margin, "
                   f"dlib-cnn {thr['cnn']:g}, scrfd {thr['scrfd']:g} face probability, yunet {thr['yunet']:g} score)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--half", action="store_true", help="reduced precision (fp16 on GPU, bf16 on CPU)")
    p.add_argument("--ext", choices=EXT_CHOICES, default="auto",
                   help="format of restored_imgs: png, jpg, tif or auto (default: a JPEG, PNG, WebP or TIFF input's "
                   "own, JPEG for HEIC/HEIF/AVIF photos, PNG for other formats and whenever a JPEG would lose "
                   "transparency)")
    p.add_argument("--weights", default=None, help="weights for --method: a file, a zoo entry or a built-in "
                   "builtin:FILE (--list-methods shows each method's; default: the first listed)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimisation steps per face for the slow methods (robust-inversion: split over its three "
                   "phases, default 450; rls/rls-plus: latent-search steps, default 200, RLS+ adds a quarter; "
                   "prior-sft: refinement of the encoder's latents, default 0 (20 with --refs; 0 turns it off), "
                   "about 0.4 s a step with --half)")
    p.add_argument("--refs", default=None,
                   help="folder of reference photos of the same person, for the methods tagged 'refs' in "
                   "--list-methods (honestface, prior-sft, robust-inversion, rls, rls-plus; of a photo with several "
                   "faces, the one that matches the other photos' person; with --aligned: aligned crops)")
    p.add_argument("--force-refs", action="store_true",
                   help="use the --refs photos for every face even when the method finds them to show another "
                   "person (by default a photo's other people are restored without them, and a photo where no face "
                   "matches stops with one line; the JSON records refs_used and refs_distance per face)")
    p.add_argument("--no-color-match", dest="color_match", action="store_false",
                   help="do not match the restored faces' colours to the input faces (with --aligned: do not "
                        "return gray faces for gray crops)")
    p.add_argument("--mask", choices=("square", "landmarks", "mesh"), default="mesh",
                   help="paste-back mask: mesh (default; Face Mesh face oval: the face only, no hair or neck; falls "
                   "back to landmarks without the facemesh-468 weights), landmarks (dlib 68-point hull) or square")
    p.add_argument("--bg-upsampler", choices=("lanczos", "esrgan"), default="lanczos",
                   help="how the photo around the faces is upscaled: lanczos (default: instant, and the same result "
                        "whatever is cached) or esrgan (ESRGAN-thick super-resolution in tiles, zoo weights "
                        "esrgan-thick, never downloaded here: `facerestore models download esrgan-thick`; on CPU "
                        "about 1-2 ms per input pixel, so minutes per megapixel)")
    p.add_argument("--crf", type=int, default=None,
                   help="video inputs: quality of the re-encoded video stream, lower is "
                   "better (x264 default 18, x265 20, VP9 30)")
    p.add_argument("--codec", default=None,
                   help="video inputs: encoder of the output (default: the input's codec; e.g. libx264, libx265, "
                   "libvpx-vp9, mpeg4); audio is always copied unchanged")
    p.add_argument("--deinterlace", choices=("auto", "on", "off"), default="auto",
                   help="video inputs: make interlaced frames (old tapes digitised as DV or MPEG-2, TV captures) "
                   "progressive with FFmpeg's bwdif before restoring them, at the same frame rate; auto (default): the "
                   "frames the video marks interlaced, on: every frame (combed video stored as progressive), off: none")
    p.add_argument("--sequence", action="store_true",
                   help="the input folder's images are the frames of one shot, in name order: restore them like a "
                   "video (faces tracked, landmarks smoothed, restorations blended over time, the quality gate "
                   "decided per track) into restored_imgs/ under their own names")
    p.add_argument("--fps", type=float, default=25.0,
                   help="with --sequence: the frame rate of the frames (for the landmark smoothing; default 25)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted batch: skip every input whose outputs an earlier run completed "
                   "with the same options, weights, references and facerestore version, the input unchanged (its "
                   "JSON, written last, says so); everything else is restored")
    p.add_argument("--list-methods", action="store_true", help="list the restoration methods and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _print_methods() -> None:
    from facerestore.methods import list_restorers

    rows = list_restorers()
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.origin:<9}  [{', '.join(r.flags())}]  {r.description}")
        if isinstance(r.weights, tuple):  # in order of preference: the first one available is used
            weights = "first available of " + ", ".join(r.weights)
        else:
            weights = r.weights or "none shipped: pass --weights"
        trained = f"; trained on {', '.join(r.trained_on)}" if r.trained_on else ""
        print(f"{'':<{width}}  weights: {weights} ({r.weights_licence}){trained}")


def _output_stems(files: list[Path], root: Path) -> dict[Path, Path]:
    """Output stem per input, a path relative to each output folder (sub-folder / name: the input's own place
    under ``root`` when it is a folder read with --recursive, else the name alone), unique per folder (a.jpg,
    a.png, a_png.jpg -> a_jpg, a_png, a_png_2) and short enough for the longest output name (``STEM_NN.json``);
    renames are reported."""
    from facerestore.cli.guards import unique_stems

    rel = {f: (f.relative_to(root) if root.is_dir() else Path(f.name)) for f in files}
    return unique_stems(files, {f: r.parent / Path(r.name).stem for f, r in rel.items()}, reserve=len("_000.json"))


# options that act only in some modes: (modes where they do nothing, the note's reason, the options' dests)
_IDLE_OPTIONS = (
    ("aligned", "no effect with --aligned (aligned crops are neither detected nor pasted back)",
     ("detector", "min_score", "only_center_face", "mask", "bg_upsampler")),
    ("no_video", "for video inputs only, and there are none", ("crf", "codec", "deinterlace")),
    ("no_sequence", "only with --sequence", ("fps",)),
    ("no_refs", "only with --refs", ("force_refs",)),
    ("no_photo", "for still photos only, and there are none (videos and animations keep their format)", ("ext",)),
)


def idle_options(args: argparse.Namespace, has_video: bool, has_photo: bool = True) -> list[str]:
    """One line per group of options given (not at their defaults) that do nothing for these inputs and modes, e.g.
    "--crf, --codec: for video inputs only, and there are none" (said, never silently ignored)."""
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    modes = {"aligned": bool(args.aligned), "no_video": not has_video, "no_sequence": not args.sequence,
             "no_refs": not args.refs, "no_photo": not has_photo}
    lines = []
    for mode, reason, dests in _IDLE_OPTIONS:
        given = [d for d in dests if modes[mode] and getattr(args, d) != defaults.get_default(d)]
        if given:
            lines.append(f"{', '.join('--' + d.replace('_', '-') for d in given)}: {reason}")
    return lines


def _check_output(src: Path, files: list[Path], out_dir: Path, recursive: bool = False) -> None:
    import os

    from facerestore.cli.guards import check_output_location
    from facerestore.errors import OutputError
    from facerestore.io import display_path

    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output is not a folder: {display_path(out_dir)}")
    check_output_location(out_dir, src, files, recursive=recursive, subfolders=(*SUBFOLDERS, VIDEO_SUBFOLDER))
    # fail before loading anything when the output cannot be created (nothing is created here)
    probe = out_dir.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {display_path(probe)} (for the output folder "
                          f"{display_path(out_dir)}): permission denied")


def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        _print_methods()
        return 0

    import numpy as np

    from facerestore import io
    from facerestore.cli.common import run_batch
    from facerestore.cli.guards import check_finite, note_ignored, say
    from facerestore.errors import InputError
    from facerestore.faces.detect import create_detector
    from facerestore.methods.restorer import check_unit_interval
    from facerestore.nn.devices import resolve_device
    from facerestore.pipeline import (
        NON_FINITE,
        default_upscale,
        get_restorer,
        prepare_refs,
        restore_photo,
        write_photo_json,
    )

    if not args.input or not args.output:
        raise InputError("-i/--input and -o/--output are required (or use --list-methods)")
    if args.upscale is not None and not (np.isfinite(args.upscale) and args.upscale > 0):
        raise InputError(f"--upscale must be a positive number, got {args.upscale}")
    check_finite("--min-score", args.min_score)
    check_finite("--fidelity", args.fidelity)
    if args.fidelity is not None:  # before the method loads: a bad value gets its one line, not the loading's notes
        check_unit_interval("fidelity", args.fidelity)
    check_finite("--blend", args.blend)
    if not 0.0 <= args.blend <= 1.0:
        raise InputError(f"--blend must be in [0, 1], got {args.blend:g}")
    src = Path(args.input)
    out_dir = Path(args.output)
    from facerestore.video import (
        check_encoder_options,
        is_video_file,
        list_inputs,
        sniff_video_extension,
        video_output_extension,
    )

    if args.recursive and args.sequence:
        raise InputError("--sequence reads one folder of frames: drop -r/--recursive")
    # images, and the videos of a folder (and of its sub-folders with -r)
    files = list_inputs(src, recursive=args.recursive, on_skip=note_ignored)
    _check_output(src, files, out_dir, args.recursive)
    # a video named on the command line without a video extension is recognised by its first bytes
    sniffed = (sniff_video_extension(src) if src.is_file() and not (is_video_file(src) or io.is_image_file(src))
               else None)
    videos = {f for f in files if is_video_file(f) or (sniffed and f == src)}
    has_video = bool(videos)
    clips = videos | {f for f in files if io.is_animation(f)}  # restored frame by frame, as one shot
    if has_video:
        check_encoder_options(args.codec, args.crf)
    if args.sequence:  # before anything loads or any folder is made
        if args.resume:
            raise InputError("--resume cannot continue a --sequence (its frames are restored as one shot): drop it")
        if src.is_file() or args.aligned or clips:
            raise InputError("--sequence takes a folder of frames (still images only, not --aligned)")
        if not (np.isfinite(args.fps) and args.fps > 0):
            raise InputError(f"--fps must be a positive number, got {args.fps:g}")
    if args.aligned and clips and len(clips) == len(files):
        raise InputError("--aligned applies to still face crops, not to videos or animations")
    for line in idle_options(args, has_video, has_photo=len(clips) < len(files)):
        print(f"note: {line}", file=sys.stderr)

    device = resolve_device(args.device)
    restorer = get_restorer(args.method, weights=args.weights, device=device, half=args.half, steps=args.steps)
    restorer.progress = not args.quiet
    if restorer.spec.note and not args.weights:
        print(f"note: {restorer.spec.note}", file=sys.stderr)
    note = _half_note(restorer, device, args.half)
    if note:
        print(f"note: {note}", file=sys.stderr)
    restorer.check_options(fidelity=args.fidelity, refs=args.refs)
    unused = restorer.unused_refs_reason() if args.refs else None
    if unused:  # said, and the photos not read for nothing
        print(f"note: --refs: not used ({unused})", file=sys.stderr)
        args.refs = None
    # the detector applies its calibrated threshold unless --min-score replaces it
    threshold = {} if args.min_score is None else {"threshold": args.min_score}
    detector = None if args.aligned else create_detector(args.detector, **threshold)
    background: Any = "lanczos"
    if args.bg_upsampler == "esrgan" and not args.aligned:  # aligned crops have no background (noted above)
        from facerestore.faces.background import esrgan_background

        background = esrgan_background(device, progress=not args.quiet)  # fails now if the weights are missing
    refs = None
    if args.refs:
        # prepared once for the whole batch
        try:
            ref_files = io.list_images(args.refs)
        except InputError as exc:  # say which option the path came from (-i's messages say "input")
            raise InputError(f"--refs: {exc}") from None
        # a reference photo is an input too: never inside the folders outputs go to (the output folder itself holds
        # only those folders, so references beside them are safe)
        targets = {(out_dir / sub).resolve() for sub in (*SUBFOLDERS, VIDEO_SUBFOLDER)}
        inside = next((f for f in ref_files if f.resolve().parent in targets), None)
        if inside is not None:
            raise InputError(f"--refs: {io.display_path(inside)} lies in {io.display_path(inside.parent)}, where "
                             "outputs go; copy the reference photos elsewhere or choose another -o")
        refs = prepare_refs(ref_files, int(restorer.spec.size), aligned=args.aligned,
                            detector=detector or args.detector, device=restorer.device)
    digest = _options_digest(args, ref_files if args.refs else [])
    stems = _output_stems(files, src)
    protect = [str(f) for f in files] + [str(f) for f in (ref_files if args.refs else [])]
    for sub in SUBFOLDERS:
        io.check_output_dir(out_dir / sub)
    if clips:
        io.check_output_dir(out_dir / VIDEO_SUBFOLDER)
    seq = None
    if args.sequence:
        from facerestore.video import SequenceRestorer

        seq = SequenceRestorer(restorer, args.fps, upscale=2.0 if args.upscale is None else args.upscale,
                               detector=detector if detector is not None else args.detector, identity=True,
                               **_restore_options(args, refs, background))
    no_face: list[Path] = []
    kept: list[int] = []  # faces the quality gate left as they were
    broken: list[int] = []  # faces whose restoration held NaN (kept as they were; not the gate's verdict)
    not_aligned: list[int] = []  # per file: faces found that could not be aligned (left as they were)
    refs_checked: list[Any] = []  # each face's RefsUse when the method checked the references
    warned_alpha: list[bool] = []
    resumed: list[int] = []  # the face counts of inputs an earlier run completed (--resume)

    def process(path: Path) -> int:
        from facerestore.faces.paste import upscaled_shape

        if path in clips:
            ext = (video_output_extension(path.with_suffix(sniffed) if path == src and sniffed else path)
                   if path in videos else path.suffix.lower())
            target = out_dir / VIDEO_SUBFOLDER / f"{stems[path].as_posix()}{ext}"
            done = _done_before(target.with_suffix(".json"), path, digest) if args.resume else None
            if done is not None:
                resumed.append(done)
                return done
            _forget_record(target.with_suffix(".json"))
            return _restore_video(path, path in videos, target, args, restorer,
                                  detector if detector is not None else args.detector,
                                  background, refs, protect, digest)
        stem = stems[path].as_posix()  # sub-folder/name with --recursive
        record = out_dir / "restored_imgs" / f"{stem}.json"
        if args.resume:
            done = _done_before(record, path, digest)
            if done is not None:
                resumed.append(done)
                return done
        _forget_record(record)
        loaded = io.read_image(path)
        if loaded.pages > 1:  # never silently: the output holds one page
            say(f"note: {io.display_path(path)} holds {loaded.pages} pages: the first is restored, the others are "
                "not in the output")
        h, w = loaded.rgb.shape[:2]
        upscale = args.upscale if args.upscale is not None else default_upscale(args.aligned, w, restorer)
        oh, ow = upscaled_shape(h, w, upscale)
        io.check_pixels(ow, oh, what=f"the output (--upscale {upscale:g})")
        res = seq(loaded) if seq is not None else restore_photo(
            loaded, restorer, upscale=upscale, aligned=args.aligned,
            detector=detector if detector is not None else args.detector, device=device, half=args.half,
            **_restore_options(args, refs, background),
        )
        ext = io.output_extension(path, res.alpha is not None, args.ext, size=(res.image.shape[1], res.image.shape[0]))
        if res.alpha is not None and ext == ".jpg" and not warned_alpha:
            warned_alpha.append(True)
            say("note: --ext jpg drops the alpha channel of transparent inputs")
        img_path = out_dir / "restored_imgs" / f"{stem}{ext}"
        res.save(img_path, protect=protect)
        face_files = []
        for k, f in enumerate(res.faces):
            name = f"{stem}_{k:02d}.png"
            kw: dict[str, Any] = dict(bit_depth=res.bit_depth, gray=res.is_gray, protect=protect,
                                      metadata=res.metadata.for_crops())
            io.write_image(out_dir / "cropped_faces" / name, f.input_crop, **kw)
            io.write_image(out_dir / "restored_faces" / name, f.restored_crop, **kw)
            io.write_image(out_dir / "cmp" / name, np.concatenate([f.input_crop, f.restored_crop], axis=1), **kw)
            face_files.append(name)
        _remove_stale_faces(out_dir, stem, len(res.faces))
        write_photo_json(
            record, res, protect=protect, input=str(path),
            output=str(img_path), device=device, half=bool(args.half), color_match=bool(args.color_match),
            min_score=args.min_score if args.min_score is not None else getattr(detector, "threshold", None),
            bg_upsampler=None if args.aligned else args.bg_upsampler,
            resume=_resume_record(path, digest, len(res.faces), img_path),
            faces=[{"cropped_face": f"cropped_faces/{n}", "restored_face": f"restored_faces/{n}", "cmp": f"cmp/{n}"}
                   for n in face_files],
        )
        # NaN restorations are said apart (the gate did not find them worse: the method failed on them)
        kept.extend(1 for f in res.faces if f.gate is not None and f.gate.weight == 0.0 and f.gate.reason != NON_FINITE)
        broken.extend(1 for f in res.faces if f.gate is not None and f.gate.reason == NON_FINITE)
        not_aligned.append(int(getattr(res, "faces_not_aligned", 0) or 0))
        checked = [f.refs for f in res.faces if f.refs is not None and f.refs.distance is not None]
        refs_checked.extend(checked)
        skipped = sum(1 for u in checked if not u.used)
        narrow = [u.distance for u in checked if u.narrow]
        per_photo = seq is None  # the frames of a sequence get one line at the end, not one each
        if skipped and per_photo:
            say(f"{io.display_path(path)}: references used for {len(res.faces) - skipped} of {len(res.faces)} faces "
                f"(the rest look like other people and were restored without them; refs_distance in the JSON)")
        if narrow and per_photo:
            say(f"{io.display_path(path)}: the references passed the identity check only narrowly (dlib distance "
                f"{max(narrow):.2f}, same person under 0.60); on a degraded face the check often cannot tell people "
                "apart: make sure the references show this person")
        if not res.faces and not_aligned[-1]:
            say(f"{io.display_path(path)}: {not_aligned[-1]} face(s) found at the photo's edge could not be restored "
                "(left as they were)")
        elif not res.faces:
            no_face.append(path)
            say(f"no face found: {io.display_path(path)} (background upscaled only)")
        return len(res.faces)

    report = run_batch(files, process, desc="restore", progress=not args.quiet, single=src.is_file())
    n_faces = sum(report.done) - sum(resumed)  # this run's work; what --resume skipped is counted apart
    n_restored = sum(1 for n in report.done if n) - sum(1 for n in resumed if n)
    noun = "image" if not clips else "video" if len(clips) == len(files) else "file"  # video: animations too
    noun += "s" * (len(files) != 1)
    print(f"restored {n_faces} face{'s' * (n_faces != 1)} in {n_restored} of {len(files)} {noun} with "
          f"{args.method} -> {io.display_path(out_dir)}"
          + (f"; {len(kept)} face{'s' * (len(kept) != 1)} kept as {'they were' if len(kept) != 1 else 'it was'} "
             "(the restoration was worse: see the JSON's gate)" if kept else "")
          + (f"; {len(broken)} face{'s' * (len(broken) != 1)} not restored (the method returned NaN: kept as "
             f"{'they were' if len(broken) != 1 else 'it was'})" if broken else "")
          + (f"; {sum(not_aligned)} face{'s' * (sum(not_aligned) != 1)} at a photo's edge left as "
             f"{'they were' if sum(not_aligned) != 1 else 'it was'} (could not be aligned)" if sum(not_aligned) else "")
          + (f"; {len(no_face)} without faces (upscaled only)" if no_face else "")
          + (f"; {len(resumed)} done by an earlier run (--resume)" if resumed else "")
          + (f"; the references guided {sum(u.used for u in refs_checked)} of {len(refs_checked)} faces"
             if seq is not None and refs_checked else "")
          + (f"; {len(report.failed)} failed" if report.failed else ""), file=sys.stderr)
    return report.exit_code


# options that do not change what is written for an input (where it is written is checked by the record itself)
_NOT_OUTPUT_OPTIONS = frozenset({"input", "output", "recursive", "quiet", "list_methods", "resume", "command"})


def _file_stamp(path: str | Path) -> list[Any]:
    """Name, size and modification time of a file (how --resume tells an input or weight file changed)."""
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


# what zoo entries are used by (ZooEntry.used_by) when they only score or train: a metric's or a training loss's
# feature network; downloading one changes no restoration, so it must not make --resume restore everything again
# (not lpips_vgg: robust-inversion's "auto" loss becomes LPIPS-VGG once its weights are cached)
_SCORING_ONLY = frozenset({"lpips", "lpips_squeeze", "dists", "ea_dists", "fid", "kid", "pfid", "train.losses"})


def _options_digest(args: argparse.Namespace, ref_files: list[Path]) -> str:
    """A digest of everything besides the input that decides a restore's outputs: the options (the detector
    "auto" stands for, resolved), the facerestore version, the zoo entries in the cache that a restoration can use
    (they decide what defaults resolve to: the detector, the mesh mask, a method's prior; metric-only ones left
    out), a --weights file's and the reference
    photos' stamps (re-exported weights or new references make earlier outputs stale)."""
    import hashlib
    import json

    from facerestore import zoo
    from facerestore._version import __version__
    from facerestore.faces.detect import canonical_detector_name

    options = {k: v for k, v in vars(args).items() if k not in _NOT_OUTPUT_OPTIONS and not k.startswith("_")}
    options["detector"] = canonical_detector_name(args.detector)
    cached = sorted(e.name for e in zoo.list_entries() if zoo.is_available(e.name)
                    and not (e.used_by and all(use in _SCORING_ONLY for use in e.used_by)))
    weights = [_file_stamp(args.weights)] if args.weights and Path(args.weights).is_file() else []
    key = [__version__, options, cached, weights, [_file_stamp(f) for f in ref_files]]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _resume_record(path: Path, digest: str, faces: int, output: Path | None = None) -> dict[str, Any]:
    """The JSON's ``resume`` field: what a later ``--resume`` run compares before skipping ``path`` (the output's
    size too: an output cut short by a crash or a full disk is restored again)."""
    stamp = _file_stamp(path)
    out = {"options": digest, "input_bytes": stamp[1], "input_mtime_ns": stamp[2], "faces": faces}
    if output is not None:
        out["output_bytes"] = output.stat().st_size
    return out


def _done_before(record_path: Path, path: Path, digest: str) -> int | None:
    """The number of faces an earlier run restored in ``path``, when its record (``record_path``, written after
    every other output) says it completed with the same options and input, and its output (next to the record)
    is still there; None when ``path`` must be restored."""
    import json

    try:
        record = json.loads(record_path.read_text())
        resume = record["resume"]
        output = record_path.parent / Path(record["output"]).name
        expected = _resume_record(path, digest, int(resume["faces"]), output if "output_bytes" in resume else None)
        same_input = Path(record["input"]).resolve() == path.resolve()  # -i given relative once, absolute now
    except (OSError, ValueError, KeyError, TypeError):  # no record, one from before --resume, or no output
        return None
    if resume != expected or not same_input or not output.is_file():
        return None
    return expected["faces"]


def _forget_record(record: Path) -> None:
    """Remove an input's record from an earlier run before its outputs are replaced: interrupted midway, this
    run must not leave new outputs next to a record that --resume would take for theirs (a symbolic link or
    anything but a regular file is left alone: writing the record refuses it later)."""
    if record.is_file() and not record.is_symlink():
        record.unlink()


def _remove_stale_faces(out_dir: Path, stem: str, start: int) -> None:
    """Remove the face files STEM_NN.png (NN >= ``start``) an earlier run left in the face folders: a photo where
    this run finds fewer faces must not keep another run's extra crops beside its own (links are left alone)."""
    for sub in SUBFOLDERS[1:]:
        k = start
        while (f := out_dir / sub / f"{stem}_{k:02d}.png").is_file() and not f.is_symlink():
            f.unlink()
            k += 1


def _half_note(restorer: Any, device: str, half: bool) -> str | None:
    """The note about --half on a CPU, or None: where the CPU computes bf16 natively (AVX-512 BF16 / AMX), a slow
    (optimisation) method run in fp32 is told that --half is faster there (robust-inversion: 2.4x, rls: 1.7x;
    benchmarks/results/inversion_speed.md); where it does not, --half is told that bf16 is emulated and slower (a
    MobileStyleGAN render on an AVX2-only CPU: 5.0 s in bf16 against 0.22 s in fp32)."""
    from facerestore.nn.devices import cpu_has_native_bf16

    if device != "cpu":
        return None
    spec = restorer.spec
    native = cpu_has_native_bf16()
    if half and not native:
        return ("this CPU has no native bf16 instructions (AVX-512 BF16 or AMX): --half emulates bf16 and is slower "
                "here (up to 20x), not faster; drop --half")
    if not half and native and spec.unsupervised and spec.supports_half(device):
        return (f"{spec.name} optimises every face; --half runs its generator in bf16, about 2x faster on this CPU "
                "with the same result (benchmarks/results/inversion_speed.md)")
    return None


def _restore_options(args: argparse.Namespace, refs: Any, background: Any) -> dict[str, Any]:
    """The restoration options shared by photos, frame sequences and videos (one list for the three paths).
    The occlusion guard is named only when --no-occlusion-guard turns it off (on is restore_photo's default, which
    the web page also leaves to it)."""
    return {"fidelity": args.fidelity, "refs": refs, "force_refs": args.force_refs, "color_match": args.color_match,
            "mask": args.mask, "background": background, "blend": args.blend, "gate": args.gate,
            **({} if args.occlusion_guard else {"occlusion_guard": False}),
            "only_center_face": args.only_center_face, "min_score": args.min_score}


def _restore_video(path: Path, is_video: bool, target: Path, args: argparse.Namespace, restorer: Any, detector: Any,
                   background: Any, refs: Any, protect: list[str], digest: str) -> int:
    """One video (``is_video``) or animated image -> ``restored_videos/STEM.EXT`` and its JSON record; returns the
    faces restored."""
    from tqdm import tqdm

    from facerestore import io
    from facerestore.cli.guards import say
    from facerestore.errors import InputError
    from facerestore.video import restore_animation, restore_video

    if args.aligned:
        raise InputError("--aligned applies to still face crops, not to videos or animations")
    upscale = 2.0 if args.upscale is None else args.upscale
    target.parent.mkdir(parents=True, exist_ok=True)  # a sub-folder with --recursive
    bar = tqdm(desc=path.name, unit="frame", disable=args.quiet, file=sys.stderr, leave=False)

    def tick(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(1)

    try:
        if is_video:
            res = restore_video(path, target, restorer, upscale=upscale, detector=detector, crf=args.crf,
                                codec=args.codec, deinterlace=args.deinterlace, protect=protect, on_frame=tick,
                                **_restore_options(args, refs, background))
        else:
            res = restore_animation(path, target, restorer, upscale=upscale, detector=detector, protect=protect,
                                    on_frame=tick, **_restore_options(args, refs, background))
    finally:
        bar.close()
    n_faces = int(sum(res.faces_per_frame))
    record = {"input": str(path), "method": args.method, "upscale": upscale, **res.to_json(),
              "resume": _resume_record(path, digest, n_faces, target)}
    io.atomic_write_json(target.with_suffix(".json"), record)
    if res.faces_with_refs == 0 and n_faces:
        d = res.refs_closest_distance
        say(f"{io.display_path(path)}: the reference photos matched no face of the video"
            + ("" if d is None else f" (closest dlib distance {d:.2f})")
            + ": restored without them; --force-refs uses them anyway")
    elif res.faces_with_refs is not None and 0 < res.faces_with_refs < n_faces:
        say(f"{io.display_path(path)}: the reference photos were used for {res.faces_with_refs} of {n_faces} faces "
            "(the others did not match them: another person, or this one turned away or blurred)")
    return n_faces
