"""`facerestore benchmark`: restorers side by side on your own aligned faces (degrade, restore, score, compare).

Writes ``benchmark.json`` (every face's score per degradation, row and metric; each method's licence),
``benchmark.md`` (means and paired 95% bootstrap intervals against ``--against``) and one picture per degradation
(``grid_<degradation>.png``: faces as rows, columns input | each method | clean; the images of those faces are
kept in ``images/``) into the output folder, all atomically; the table is also printed. Exit 2 with one line on
bad input (checked before any work).

Resumable: each measured face is appended to ``benchmark.partial.jsonl`` (its first line records the protocol:
faces, size, seed, degradations, methods, metrics, steps, precision); the same command after an interruption
measures only the faces missing from it, and a different protocol in the same folder is refused. The file is
removed once the results are written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compare restorers on your own aligned faces: degrade, restore, score, with paired intervals"
EXAMPLES = """\
  facerestore benchmark --data faces/ -o bench/                       # ispl on 16 faces, 5 degradations
  facerestore benchmark --data faces/ -o bench/ --methods ispl,prior-sft,ispl@builtin:ispl-compact-128.safetensors \\
      --degradations clean,jpeg:50,down:8,blur:4,noise:30,realworld-gfpgan --metrics psnr,ssim,id_mobileface,niqe
  facerestore benchmark --data faces/ -o bench/ --methods rls --steps 60 --count 4 --degradations down:8
  facerestore benchmark --data ../shared/data/ffhq256 --held-out --size 256 -o bench/   # faces no weights saw
Degradations: clean, down:F, blur:SIGMA_PX, noise:SIGMA_255, jpeg:QUALITY, or any task of `facerestore degrade
--list` (TASK or TASK@LEVEL). Methods: NAME or NAME@WEIGHTS (`facerestore restore --list-methods`).
"""

DEFAULT_DEGRADATIONS = "clean,down:8,blur:4,noise:30,realworld-gfpgan"
DEFAULT_METRICS = "psnr,ssim,fed,niqe"  # all available offline (dlib's FED; id_mobileface needs its download)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder of clean, square, FFHQ-aligned face crops (sorted by name)")
    p.add_argument("-o", "--output", required=True, help="output folder (benchmark.json, benchmark.md, grids)")
    p.add_argument("--methods", default="ispl", help="comma list of NAME or NAME@WEIGHTS (default ispl)")
    p.add_argument("--degradations", default=DEFAULT_DEGRADATIONS, help=f"comma list (default {DEFAULT_DEGRADATIONS})")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma list of metric names (default {DEFAULT_METRICS}; "
                   "see `facerestore evaluate --list`)")
    p.add_argument("--count", type=int, default=16, help="the first N faces of --data (default 16)")
    p.add_argument("--held-out", action="store_true", help="only the faces our built-in weights never trained on: "
                   "numeric file names ending in 0 (the project's hold-out rule for ffhq256)")
    p.add_argument("--size", type=int, default=512, help="side in px the faces are scored at (default 512)")
    p.add_argument("--seed", type=int, default=0, help="face i is degraded with seed SEED + i (default 0)")
    p.add_argument("--against", default="input", help="the row every interval is measured against (default input)")
    p.add_argument("--grid", type=int, default=4, help="faces per degradation in the grid pictures (0: none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    p.add_argument("--half", action="store_true", help="methods in reduced precision (as `restore --half`; methods "
                   "without it run in fp32, with a note)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per face for the slow methods (as "
                   "`restore --steps`; fixed networks in --methods ignore it, with a note)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def parse_methods(text: str) -> list[tuple[str, str, str | None]]:
    """``"ispl,ispl@builtin:x.safetensors"`` -> [(label, name, weights)]: the label is the item as written."""
    from facerestore.errors import InputError
    from facerestore.methods import registry

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, weights = item.partition("@")
        registry.REGISTRY.get(name)  # an unknown name: one line listing the methods
        out.append((item, name, weights or None))
    if not out:
        raise InputError("--methods is empty")
    if len({label for label, _, _ in out}) != len(out):
        raise InputError("a method is listed twice")
    return out


def method_budget(name: str, *, steps: int | None, half: bool, device: str) -> tuple[int | None, bool, list[str]]:
    """The ``--steps`` and ``--half`` that method ``name`` can take, and a note for each it cannot: a side-by-side
    run mixes fixed networks with optimisation methods, so a budget meant for the slow ones must not stop it."""
    from facerestore.methods import registry
    from facerestore.methods.restorer import Restorer

    cls = registry.REGISTRY.restorer_class(name)
    notes = []
    if steps is not None and getattr(cls.budget_options, "__func__", None) is Restorer.budget_options.__func__:
        steps = None
        notes.append(f"--steps: not used by {name} (a fixed network)")
    if half and not cls.spec.supports_half(device):
        half = False
        notes.append(f"--half: {name} runs in fp32 (its precisions: {', '.join(cls.spec.precisions)})")
    return steps, half, notes


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


PARTIAL = "benchmark.partial.jsonl"


def read_partial(path: Path, protocol: dict) -> dict[tuple[str, int], dict]:
    """The face records of an unfinished run at ``path`` with the same ``protocol`` (its first line); {} when there
    is no file or it holds no face. A torn last line (an interrupted write) is ignored; faces measured under another
    protocol are refused (InputError), never mixed in or thrown away."""
    import json

    from facerestore.errors import InputError
    from facerestore.io import display_path

    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])["protocol"] if lines else None
    except (ValueError, KeyError, TypeError):
        header = None
    done = {}
    for line in lines[1:]:
        try:
            r = json.loads(line)
            done[(str(r["degradation"]), int(r["face"]))] = r["record"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interrupt: that face is measured again
    if header != protocol:
        if not done:  # a run that stopped before its first face (e.g. a bad option): nothing to keep
            return {}
        raise InputError(f"{display_path(path)} holds an unfinished benchmark of another protocol (faces, size, seed, "
                         "degradations, methods, metrics, steps or precision): use another --output or delete it")
    return done


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from facerestore import benchmark, io
    from facerestore.errors import InputError
    from facerestore.nn.devices import resolve_device
    from facerestore.pipeline import get_restorer

    if args.count < 1 or args.grid < 0 or args.size < 16:
        raise InputError("--count must be >= 1, --grid >= 0 and --size >= 16")
    methods = parse_methods(args.methods)
    degradations = [benchmark.parse_degradation(d) for d in args.degradations.split(",") if d.strip()]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not degradations or not metrics:
        raise InputError("--degradations and --metrics must each name at least one")
    for m in metrics:
        benchmark.check_metric(m, args.size)  # unknown names, set metrics (FID), too small a --size: one line
    if args.against not in ["input", *(label for label, _, _ in methods)]:
        raise InputError(f"--against {args.against!r} is neither 'input' nor one of --methods")
    if Path(args.data).is_dir() and Path(args.output).is_dir() and io.same_file(args.data, args.output):
        raise InputError("--output is the --data folder: the results (and grids, which are images) would mix with "
                         "the faces; choose another folder")
    if not Path(args.data).exists():  # before the output folder is made
        raise InputError(f"input not found: {io.display_path(args.data)}")
    out_dir = io.check_output_dir(args.output)
    device = resolve_device(args.device)
    source = args.data
    if args.held_out:
        from facerestore.train.data import is_held_out

        source = [f for f in io.list_images(args.data) if is_held_out(f)] if Path(args.data).is_dir() else []
        if not source:
            raise InputError(f"no held-out faces (numeric file names ending in 0) in {io.display_path(args.data)}")
    names, faces = benchmark.load_faces(source, args.size, args.count)
    protocol = {"faces": names, "size": args.size, "seed": args.seed, "degradations": [d.name for d in degradations],
                "methods": [list(m) for m in methods], "metrics": metrics, "steps": args.steps, "half": args.half}
    partial = out_dir / PARTIAL
    done = read_partial(partial, protocol)
    restorers = {}
    for label, name, weights in methods:
        steps, half, notes = method_budget(name, steps=args.steps, half=args.half, device=device)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        restorers[label] = get_restorer(name, weights=weights, device=device, half=half, steps=steps)
    if done:
        print(f"resuming: {len(done)} of {len(names) * len(degradations)} faces already measured ({PARTIAL})",
              file=sys.stderr)
    else:
        io.atomic_write_text(partial, json.dumps({"protocol": protocol}) + "\n")
    image_dir = out_dir / "images"

    def image_path(deg: str, i: int, row: str) -> Path:
        return image_dir / _file_part(deg) / f"{i:03d}_{_file_part(row)}.png"

    def save(deg: str, i: int, record: dict, images: dict | None) -> None:
        for row, img in (images or {}).items():  # first, so that a logged face always has its pictures
            io.write_image(image_path(deg, i, row), img[0].permute(1, 2, 0).numpy())
        with open(partial, "a", encoding="utf-8") as f:
            f.write(json.dumps({"degradation": deg, "face": i, "record": record}) + "\n")

    result = benchmark.run_benchmark(faces, names, degradations, restorers, metrics, seed=args.seed, device=device,
                                     progress=not args.quiet, keep_images=args.grid, done=done, on_face=save)
    result.pop("images", None)
    result["command"] = "facerestore benchmark " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["benchmark"] else None
    result["data"] = io.display_path(args.data)
    for label, _, weights in methods:
        result["methods"][label]["weights"] = weights or "default"
    text = benchmark.to_markdown(result, against=args.against)
    io.atomic_write_json(out_dir / "benchmark.json", result)
    io.atomic_write_text(out_dir / "benchmark.md", text)
    grids = 0
    for deg in result["degradations"] if args.grid else []:
        rows = [*result["rows"], "clean"]
        k = min(args.grid, len(names))
        paths = [[image_path(deg, i, r) for r in rows] for i in range(k)]
        if not all(q.exists() for row in paths for q in row):
            print(f"warning: pictures of {deg!r} are missing from {io.display_path(image_dir)}: no grid",
                  file=sys.stderr)
            continue
        kept = {r: io.to_tensor([io.read_image(paths[i][j]).rgb for i in range(k)]) for j, r in enumerate(rows)}
        io.write_image(out_dir / f"grid_{_file_part(deg)}.png", benchmark.grid({**result, "images": {deg: kept}}, deg))
        grids += 1
    partial.unlink(missing_ok=True)
    print(text)
    print(f"wrote {io.display_path(out_dir / 'benchmark.json')}, benchmark.md"
          + (f" and {grids} grids" if grids else ""), file=sys.stderr)
    return 0
