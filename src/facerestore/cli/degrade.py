"""`facerestore degrade`: make low-quality copies of face images with a named task of the papers.

Every input is read (EXIF orientation applied, gray/16-bit/alpha handled by facerestore.io), resized to
``--size`` x ``--size`` with antialiased bicubic interpolation (aspect ratio not kept; ``--size 0`` keeps
the input size), degraded, and written as an 8-bit PNG with the input's stem (inputs sharing a stem, such
as ``a.jpg`` and ``a.png``, get ``a_jpg.png`` and ``a_png.png``; every rename is reported). Each image's generator
is seeded from (``--seed``, file name), so its output does not depend on which other files are in the
folder; the same seed and inputs give byte-identical outputs. ``manifest.json`` records the task,
level, seed, package version and, per image, the input's sha256, its seed and the sampled parameters
(replay them with ``facerestore.degrade.apply(x, task, params=[record])``).
"""

from __future__ import annotations

import argparse
import hashlib

HELP = "degrade face images with a named degradation task (synthetic low-quality data)"
EXAMPLES = """\
  facerestore degrade --list
  facerestore degrade -i faces/ -o lq/ --task realworld-gfpgan --seed 0
  facerestore degrade -i faces/ -o lq_x16/ --task robust-upsample --level L --size 1024
  facerestore degrade -i "my face.JPG" -o out/ --task sr4x
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="an image file or a folder of images")
    p.add_argument("-o", "--output", help="output folder (created; must not be the input folder)")
    p.add_argument("--task", help="degradation task name (see --list)")
    p.add_argument("--level", default=None, help="level XS, S, M, L or XL for tasks with levels (default M)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed derives from it and its name")
    p.add_argument("--size", type=int, default=512,
                   help="resize inputs to SIZE x SIZE (bicubic) before degrading; 0 keeps their size (default 512)")
    p.add_argument("--list", action="store_true", help="list the tasks with their papers and levels, then exit")


def image_seed(seed: int, name: str) -> int:
    """The generator seed of one image: a hash of the base seed and the file name (62 bits)."""
    # surrogateescape: a file name that is not UTF-8 hashes as its own bytes (UTF-8 names are unchanged)
    digest = hashlib.sha256(f"{int(seed)}\0{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def _print_tasks() -> None:
    from facerestore.degrade import list_tasks

    for t in list_tasks():
        levels = f" [levels {'/'.join(t.levels)}, default {t.default_level}]" if t.levels else ""
        print(f"{t.name:44s} {t.paper} ({t.source}){levels}")
        print(f"{'':44s} {t.description}")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from facerestore._version import __version__
    from facerestore.cli.common import run_batch
    from facerestore.cli.guards import check_output_location, note_ignored, unique_stems
    from facerestore.degrade import apply, get_task, resize
    from facerestore.degrade.tasks import _resolve_level
    from facerestore.errors import InputError
    from facerestore.io import (
        atomic_write_json,
        check_output_dir,
        check_pixels,
        decode_image,
        display_path,
        from_tensor,
        list_images,
        read_bytes,
        to_tensor,
        write_image,
    )

    if args.list:
        _print_tasks()
        return 0
    missing = [flag for flag, v in (("-i/--input", args.input), ("-o/--output", args.output), ("--task", args.task))
               if not v]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or use --list)")
    if args.size < 0:
        raise InputError(f"--size must be >= 0, got {args.size}")
    if args.size:
        check_pixels(args.size, args.size, what=f"--size {args.size}")
    info = get_task(args.task)
    level = _resolve_level(info, args.level)
    src = Path(args.input)
    files = list_images(src, on_skip=note_ignored)
    in_dir = src if src.is_dir() else src.parent
    out_dir = Path(args.output)
    if out_dir.resolve() == in_dir.resolve():
        raise InputError(f"output folder {display_path(out_dir)} is the input folder; choose another "
                         "(inputs are never overwritten)")
    check_output_location(out_dir, src, files)
    names = {f: s.name + ".png" for f, s in unique_stems(files, {f: Path(f.stem) for f in files},
                                                          reserve=len(".png")).items()}
    check_output_dir(out_dir)

    def process(path: Path) -> dict:
        out_name = names[path]
        data = read_bytes(path)
        x = to_tensor(decode_image(data, path).rgb)
        if args.size:
            x = resize(x, size=(args.size, args.size), method="bicubic", antialias=True)
        seed = image_seed(args.seed, path.name)
        y, params = apply(x, info.name, level=level, generator=seed)
        write_image(out_dir / out_name, from_tensor(y), protect=files)
        return {"input": path.name, "output": out_name, "input_sha256": hashlib.sha256(data).hexdigest(),
                "seed": seed, "params": params[0]}

    report = run_batch(files, process, desc=f"degrade {info.name}", single=src.is_file())
    manifest = {
        "task": info.name,
        "paper": info.paper,
        "level": level,
        "seed": args.seed,
        "size": args.size or None,
        "resize": "bicubic, antialiased (PIL-style), to size x size" if args.size else None,
        "facerestore_version": __version__,
        "images": report.done,
        "failed": [{"input": Path(p).name, "error": msg} for p, msg in report.failed],
    }
    json.dumps(manifest)  # fail loudly here rather than leave a half-valid manifest
    atomic_write_json(out_dir / "manifest.json", manifest)
    print(f"{len(report.done)} of {len(files)} images degraded with {info.name} -> {display_path(out_dir)}")
    return report.exit_code
