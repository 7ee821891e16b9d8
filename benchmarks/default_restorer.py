"""The default restorer on a degradation sweep: input vs the built-in ISPL network vs the default pipeline (ISPL +
the quality gate) vs the generative-prior restorer (``prior-sft``, alone and through the same pipeline), all rows in
one run, with paired 95% bootstrap intervals against the built-in ISPL.

Faces (512 px, FFHQ-aligned): the ffhq256 validation ids (numbers ending in 0; never trained on), bicubic-upsampled
to 512, and samples of the MobileStyleGAN prior (run seed 9999, truncation 0.7; no training of ours used this run)
when it is cached. Degradations, each with a fixed seed per face: clean; JPEG q30/50/70/90; bicubic x2/x4/x8 (down,
then bicubic back to 512); Gaussian blur sigma 2 and 4 (px at 512); Gaussian noise sigma 15 and 30 (/255);
``realworld-gfpgan``; ``full`` (ISPL's heavy blind mix: sr4x + denoise + deblur + jpeg).

Rows: ``input``; ``ispl``: the 128 px built-in network alone (``builtin:ispl-compact-128.safetensors``, resized to
512 and back: what every face got before the gate; the reference of every interval); ``default``:
``restore_photo(..., aligned=True, upscale=1)`` with the default method and weights, the pipeline the CLI runs (ISPL,
then the quality gate blends toward or keeps the input, :mod:`facerestore.quality_gate`; the JSON's ``legend`` names
the weights it used); for each method of ``--methods``
(default ``prior-sft`` when its prior is cached): ``NAME``, the network alone on the 512 px face, and ``NAME+gate``,
``restore_photo`` with that method (same gate).

Metrics: PSNR, SSIM (RGB), ``id_mobileface`` (MobileFace cosine distance: no loss of ours uses that network; ROC
AUC 0.995 on the photo pairs), ``id_mfn`` (MobileFaceNet, also independent but weak: AUC 0.70), FED
(dlib 128-d; ISPL's training identity loss uses dlib, so FED is not independent for ISPL), LLE (landmark error),
NIQE, MS-SWD (on both images area-downsampled to 256: a quarter of the time). Intervals: paired bootstrap
(2000 resamples) of the mean difference row - ispl per task.

    python benchmarks/default_restorer.py --ffhq 12 --prior 6   # 18 faces x 13 degradations, ~45 min on 2 cores
    python benchmarks/default_restorer.py --ffhq 4 --prior 0 --tasks clean,jpeg90   # a smoke run
    python benchmarks/default_restorer.py --ffhq 8 --prior 0 --tasks x8,noise30 --half \
        --methods prior-sft,prior-sft+refine10=prior-sft@10 --out benchmarks/results/default_restorer_refine.json

``--against default`` adds a second table: every row paired against the shipped pipeline (new weights vs old);
``--summarise JSON --against ROW`` adds it to a finished run without re-running the sweep.

Writes benchmarks/results/default_restorer.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SIZE = 512
METRICS = ("psnr", "ssim", "id_mobileface", "id_mfn", "fed", "lle", "niqe", "ms_swd")
LOWER_BETTER = {"psnr": False, "ssim": False, "id_mobileface": True, "id_mfn": True, "fed": True, "lle": True,
                "niqe": True, "ms_swd": True}
BASE_ROWS = ("input", "ispl", "default")
PSNR_CAP = 60.0
DEFAULT_METHOD = "ispl"  # `facerestore restore`'s --method default
REFERENCE_WEIGHTS = "builtin:ispl-compact-128.safetensors"  # the row every interval is measured against


# the sweep's task names -> `facerestore benchmark` degradations (facerestore.benchmark.parse_degradation; the same
# pixels as this script's own functions before it used them, checked bit for bit when it moved)
SWEEP = {"clean": "clean", **{f"jpeg{q}": f"jpeg:{q}" for q in (30, 50, 70, 90)},
         **{f"x{f}": f"down:{f}" for f in (2, 4, 8)}, **{f"blur{s}": f"blur:{s}" for s in (2, 4)},
         **{f"noise{s}": f"noise:{s}" for s in (15, 30)}, "realworld-gfpgan": "realworld-gfpgan", "heavy": "full"}


def degradations() -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    """Task name -> ``(clean (1, 3, S, S), seed) -> degraded``; ``heavy`` is ISPL's blind mix ``full``."""
    from facerestore.benchmark import parse_degradation

    return {name: parse_degradation(spec).apply for name, spec in SWEEP.items()}


SEEDING = "face_seed: sha256 of task/name"  # recorded in results; runs before 2026-12-07 have no such key


def face_seed(task: str, name: str) -> int:
    """The degradation seed of face ``name`` under ``task``: a function of the two names alone, so a face gets the
    same draw in every shard, task subset and order, and two faces never share one. (Before 2026-12-07 the seed was
    1000 * the task's position in the run's subset + the face's position in its shard: the 8 shards of the
    200-face run reused each draw on 8 faces; benchmarks/results/intervals_recomputed.md.)"""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{task}/{name}".encode()).digest()[:4], "little") >> 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N: this run measures every N-th face starting at face K."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise SystemExit(f"--shard {text!r}: K must be in 0..N-1")
    return k, n


def shard_indices(n_ffhq: int, n_prior: int, shard: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Indices (into the ffhq files, into the prior samples) of shard K of N: every N-th face of the sweep's face
    list (ffhq first, then prior) from face K, so that a face is in the same shard whatever the other set's size."""
    k, n = shard
    return list(range(k, n_ffhq, n)), [i for i in range(n_prior) if (n_ffhq + i) % n == k]


def load_faces(n_ffhq: int, n_prior: int, shard: tuple[int, int] = (0, 1)) -> tuple[list[str], torch.Tensor]:
    """The sweep's clean 512 px faces: ``n_ffhq`` validation faces then ``n_prior`` prior samples; of those, only
    shard K of N (every N-th face from face K), so that a long sweep runs in chunks that ``--merge`` joins."""
    from facerestore.io import read_image

    names, imgs = [], []
    files = sorted(p for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")[:n_ffhq]
    ffhq_ids, prior_ids = shard_indices(len(files), n_prior, shard)
    for f in [files[i] for i in ffhq_ids]:
        x = torch.from_numpy(read_image(f).rgb.transpose(2, 0, 1)).float()[None]
        imgs.append(F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1))
        names.append(f"ffhq/{f.name}")
    if n_prior:
        from facerestore import zoo

        if zoo.is_available("mobilestylegan-ffhq-1024"):
            from facerestore.nn.stylegan2_io import resolve_generator
            from facerestore.train.synth import sample_faces

            G = resolve_generator("mobilestylegan-ffhq-1024")
            for i in prior_ids:
                img, _ = sample_faces(G, [i], 9999, size=SIZE, truncation=0.7)
                imgs.append(img)
                names.append(f"prior/9999-{i}")
        else:
            print("mobilestylegan-ffhq-1024 not cached: no prior samples", file=sys.stderr)
    if not imgs:
        sys.exit(f"no faces: {DATA / 'ffhq256'} is missing and the prior is not cached")
    return names, torch.cat(imgs)


class Scorer:
    def __init__(self) -> None:
        from facerestore import metrics

        self.m = {}
        self.missing = {}
        for name in METRICS:
            kw = {"aligned": True} if name in ("id_mobileface", "id_mfn", "fed", "lle") else {}
            try:
                self.m[name] = metrics.create(name, **kw)
            except Exception as exc:  # weights not cached: the column is absent and the JSON says why
                self.missing[name] = str(exc).splitlines()[0][:160]

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        out = {}
        for name, m in self.m.items():
            if name == "ms_swd":  # 6 s per 512 pair on one core; at 256 (area) a quarter of that
                v = m(
                    F.interpolate(pred, size=(256, 256), mode="area"),
                    F.interpolate(clean, size=(256, 256), mode="area"),
                )
            else:
                v = m(pred) if name == "niqe" else m(pred, clean)
            out[name] = float(v.reshape(-1)[0])
        if "psnr" in out:
            out["psnr"] = min(out["psnr"], PSNR_CAP)  # identical images (clean input kept) would average to inf
        return out


def bootstrap(d: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    from facerestore.metrics.stats import paired_bootstrap

    return paired_bootstrap(d, n, seed)


# issue 15's acceptance: where the default must never be worse than its input (PSNR at most 1 dB under, the
# independent identity distance at most 0.02 above, on the mean) and where it must beat the built-in ISPL (every
# interval of these metrics below zero). The identity judge is MobileFace (id_mobileface); runs made before it
# existed are checked with MobileFaceNet (id_mfn), the weak network the issue was first checked with.
NEVER_WORSE_TASKS = ("clean", "jpeg70", "jpeg90", "x2")
IDENTITY_LIMIT = 0.02
BETTER_TASKS = ("x8", "blur4", "noise30", "realworld-gfpgan", "heavy")
BETTER_OTHER_METRICS = ("lle", "niqe", "ms_swd")


def identity_metric(result: dict) -> str:
    """The identity metric a run's claims are checked with: id_mobileface when measured, else id_mfn."""
    return "id_mobileface" if "id_mobileface" in result["metrics_present"] else "id_mfn"


def acceptance(result: dict, row: str = "default") -> dict:
    """Issue 15's two sweep claims checked on ``row`` from the per-face values of the tasks the sweep has.

    ``never_worse[task]``: mean PSNR loss and mean identity-distance gain (:func:`identity_metric`) against the
    input, their limits, the worst face and
    how many faces exceed the limit on their own (the claim is on the mean; a face over it is reported, not hidden).
    ``better[task][metric]``: the paired interval (row - ispl) and whether it lies below zero."""
    per = result["per_face"]
    ident = identity_metric(result)
    out: dict = {"row": row, "identity": ident, "never_worse": {}, "better": {}}
    for task in [t for t in NEVER_WORSE_TASKS if t in per]:
        entry = {}
        for m, limit in (("psnr", 1.0), (ident, IDENTITY_LIMIT)):
            # the 0.02 limit is on MobileFace's scale (same person under 0.71); id_mfn's distances are ~1e-4, under
            # which it could never fail: not checked with it (runs made before MobileFace say so in their tables)
            if m not in result["metrics_present"] or m == "id_mfn":
                continue
            sign = 1.0 if m == "psnr" else -1.0  # loss against the input, positive = worse
            loss = sign * (np.array([f[m] for f in per[task]["input"]]) - np.array([f[m] for f in per[task][row]]))
            entry[m] = {
                "mean_loss": float(loss.mean()) + 0.0,
                "limit": limit,
                "worst_face": float(loss.max()) + 0.0,
                "faces_over_limit": int((loss > limit).sum()),
                "met": bool(loss.mean() <= limit),
            }
        out["never_worse"][task] = entry
    for task in [t for t in BETTER_TASKS if t in per]:
        entry = {}
        for m in [m for m in (ident, *BETTER_OTHER_METRICS) if m in result["metrics_present"]]:
            d = np.array([f[m] for f in per[task][row]]) - np.array([f[m] for f in per[task]["ispl"]])
            mean, lo, hi = bootstrap(d)
            entry[m] = {"mean": mean, "low": lo, "high": hi, "met": bool(hi < 0)}
        out["better"][task] = entry
    checks = [c["met"] for part in ("never_worse", "better") for e in out[part].values() for c in e.values()]
    out["met"] = f"{sum(checks)}/{len(checks)}"
    return out


def _acceptance_markdown(acc: dict) -> list[str]:
    lines = ["", f"## Issue 15's sweep claims for `{acc['row']}`: {acc['met']} met", ""]
    if acc["never_worse"]:
        lines += [
            f"Never worse than the input (on the mean; limits: PSNR loss <= 1 dB, {acc.get('identity', 'id_mfn')} "
            f"gain <= {IDENTITY_LIMIT:g}"
            + ("; identity not checked: the limit is on MobileFace's scale, which this run did not measure, and "
               "id_mfn's distances (~1e-4) could never exceed it)" if acc.get("identity") == "id_mfn" else "):"),
            "",
            "| task | metric | mean loss | worst face | faces over the limit | met |",
            "|---|---|---|---|---|---|",
        ]
        for task, entry in acc["never_worse"].items():
            for m, c in entry.items():
                lines.append(
                    f"| {task} | {m} | {c['mean_loss']:+.3g} | {c['worst_face']:+.3g} | "
                    f"{c['faces_over_limit']} | {'yes' if c['met'] else 'NO'} |"
                )
    if acc["better"]:
        better_metrics = (acc.get("identity", "id_mfn"), *BETTER_OTHER_METRICS)
        lines += [
            "",
            "Better than the built-in ISPL (paired 95% interval of row - ispl entirely below zero):",
            "",
            "| task | " + " | ".join(better_metrics) + " |",
            "|---|" + "---|" * len(better_metrics),
        ]
        for task, entry in acc["better"].items():
            cells = [
                f"{entry[m]['mean']:+.3g} [{entry[m]['low']:+.3g}, {entry[m]['high']:+.3g}] "
                f"{'yes' if entry[m]['met'] else 'NO'}"
                if m in entry
                else ""
                for m in better_metrics
            ]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: dict) -> str:
    rows_all = result["rows"]
    lines = [
        f"# Default restorer sweep ({result['faces']} faces: {result['face_sets']})",
        "",
        "Mean per task; brackets: paired 95% bootstrap interval of (row - ispl). "
        f"Lower is better except PSNR/SSIM; PSNR capped at {PSNR_CAP:g} dB (identical images). "
        "kept/blended: faces the gate left as they were / blended toward the input. id_mobileface: MobileFace's "
        "identity distance (same person under 0.71; ROC AUC 0.995 on the photo pairs). id_mfn distances of "
        "MobileFaceNet are tiny (1e-5 scale; ROC AUC 0.70): a weak second opinion.",
        "",
    ]
    lines += [f"- `{row}`: {text}" for row, text in result.get("legend", {}).items()] + [""]
    metrics = [m for m in METRICS if m in result["metrics_present"]]
    lines.append("| task | row | " + " | ".join(metrics) + " | kept/blended |")
    lines.append("|---|---|" + "---|" * len(metrics) + "---|")
    for task, rows in result["tasks"].items():
        for row in rows_all:
            cells = []
            for m in metrics:
                mean = rows[row]["mean"][m]
                ci = rows[row].get("vs_ispl", {}).get(m)
                cells.append(f"{mean:.4g}" + (f" [{ci[1]:+.3g}, {ci[2]:+.3g}]" if ci and row != "ispl" else ""))
            extra = rows[row].get("gate", "")
            lines.append(f"| {task} | {row} | " + " | ".join(cells) + f" | {extra} |")
    for ref, pairs in result.get("against", {}).items():
        lines += [
            "",
            f"## Paired against `{ref}`",
            "",
            f"Mean of (row - {ref}) per face [paired 95% bootstrap interval]; * marks intervals excluding zero.",
            "",
            "| task | row | " + " | ".join(metrics) + " |",
            "|---|---|" + "---|" * len(metrics),
        ]
        for task, rows in pairs.items():
            for row, cis in rows.items():
                cells = [
                    f"{cis[m][0]:+.3g} [{cis[m][1]:+.3g}, {cis[m][2]:+.3g}]"
                    + ("*" if cis[m][1] > 0 or cis[m][2] < 0 else "")
                    for m in metrics
                ]
                lines.append(f"| {task} | {row} | " + " | ".join(cells) + " |")
    if "default" in rows_all and "per_face" in result:
        lines += _acceptance_markdown(acceptance(result))
    if result["metrics_missing"]:
        lines += ["", "Missing metrics: " + "; ".join(f"{k}: {v}" for k, v in result["metrics_missing"].items())]
    return "\n".join(lines) + "\n"


def paired_against(result: dict, ref: str) -> dict:
    """Paired bootstrap intervals of every other row against row ``ref``, per task, from the per-face values."""
    out: dict = {}
    for task, rows in result["per_face"].items():
        base = rows[ref]
        out[task] = {}
        for row, faces in rows.items():
            if row in (ref, "input"):
                continue
            out[task][row] = {
                m: list(bootstrap(np.array([f[m] for f in faces]) - np.array([f[m] for f in base])))
                for m in result["metrics_present"]
            }
    return out


def summarise(result: dict) -> dict:
    """Fill ``result["tasks"]`` (per task and row: means, the paired interval against ``ispl``, the gate's
    kept/blended counts) from the per-face values, and order the keys for reading."""
    present = result["metrics_present"]
    tasks = {}
    for task, rows in result["per_face"].items():
        tasks[task] = {}
        ref = {m: np.array([s[m] for s in rows["ispl"]]) for m in present}
        for row, faces in rows.items():
            vals = {m: np.array([s[m] for s in faces]) for m in present}
            entry: dict = {"mean": {m: float(np.nanmean(v)) for m, v in vals.items()}}
            if row != "ispl":
                entry["vs_ispl"] = {m: bootstrap(vals[m] - ref[m]) for m in present}
            weights = result.get("paste_weights", {}).get(row, {}).get(task)
            if weights is not None:
                w = np.array(weights)
                entry["gate"] = f"{int((w == 0).sum())}/{int(((w > 0) & (w < 1)).sum())}"
            tasks[task][row] = entry
    out = {k: v for k, v in result.items() if k not in ("tasks", "per_face", "paste_weights")}
    out["tasks"] = tasks
    out["per_face"] = result["per_face"]
    out["paste_weights"] = result.get("paste_weights", {})
    return out


def merge(paths: list[Path]) -> dict:
    """One result from the shards of one sweep (``--shard K/N`` runs of the same command): per-face values and
    names concatenated in shard order; refuses shards of different tasks, rows, metrics or weights."""
    parts = [json.loads(p.read_text()) for p in paths]
    first = parts[0]
    same = ("rows", "legend", "methods", "metrics_present", "seeding")  # shards of other seedings never mix
    for p, part in zip(paths, parts):
        for key in same:
            if part.get(key) != first.get(key):
                raise SystemExit(f"--merge: {p} differs from {paths[0]} in {key!r}")
        if list(part["per_face"]) != list(first["per_face"]):
            raise SystemExit(f"--merge: {p} has other tasks than {paths[0]}")
    names = [n for part in parts for n in part["names"]]
    if len(set(names)) != len(names):
        raise SystemExit("--merge: a face appears in two shards")
    result = {k: v for k, v in first.items() if k not in ("shard", "against")}
    result["names"] = names
    result["faces"] = len(names)
    result["face_sets"] = (
        f"{sum(n.startswith('ffhq') for n in names)} ffhq256 validation (x2 to 512), "
        f"{sum(n.startswith('prior') for n in names)} MobileStyleGAN samples"
    )
    result["per_face"] = {
        t: {r: [f for part in parts for f in part["per_face"][t][r]] for r in first["rows"]} for t in first["per_face"]
    }
    result["paste_weights"] = {
        row: {t: [w for part in parts for w in part["paste_weights"][row][t]] for t in first["paste_weights"][row]}
        for row in first["paste_weights"]
    }
    result["seconds"] = round(sum(part["seconds"] for part in parts), 1)
    result["shards"] = [
        {
            "file": p.name,
            "shard": part.get("shard"),
            "faces": len(part["names"]),
            "seconds": part["seconds"],
            "command": part.get("command"),
        }
        for p, part in zip(paths, parts)
    ]
    return summarise(result)


def _extra_methods(spec: str | None, half: bool) -> tuple[dict, dict]:
    """Restorers of the extra rows by label, and their weights (None: the method's own): the ``--methods`` items
    (:mod:`method_rows`), by default prior-sft when it can load."""
    from method_rows import load_row, parse_method_rows

    out, sources = {}, {}
    for row in parse_method_rows("prior-sft" if spec is None else spec):
        try:
            out[row.label] = load_row(row, half)
            sources[row.label] = (row.weights, row.steps)
        except Exception as exc:
            if spec is not None:
                raise
            print(f"{row.method}: not measured ({str(exc).splitlines()[0]})", file=sys.stderr)
    return out, sources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ffhq", type=int, default=20, help="ffhq256 validation faces (ids ending in 0)")
    ap.add_argument("--prior", type=int, default=10, help="MobileStyleGAN samples (run seed 9999)")
    ap.add_argument("--tasks", default="", help="comma-separated subset of the degradations")
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated extra rows NAME or LABEL=NAME:WEIGHTS "
        "(rows LABEL and LABEL+gate); default prior-sft when its prior is cached, '' for none",
    )
    ap.add_argument("--half", action="store_true", help="extra methods in bf16 on a CPU where they allow it")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_restorer.json"))
    ap.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="ROW",
        help="also pair every row against ROW (e.g. default, to compare new weights with the shipped ones)",
    )
    ap.add_argument(
        "--shard",
        metavar="K/N",
        help="measure only every N-th face from face K (a chunk of a long sweep; join the chunks' JSONs with --merge)",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no sweep: join the JSONs of --shard runs into --out (and its .md), with --against tables",
    )
    ap.add_argument(
        "--summarise",
        metavar="JSON",
        help="no sweep: add the --against tables to a finished run's JSON and rewrite its .md",
    )
    args = ap.parse_args()
    if args.merge:
        result = merge([Path(p) for p in args.merge])
        result["command"] = "python benchmarks/default_restorer.py " + shlex.join(sys.argv[1:])
        for ref in args.against:
            result.setdefault("against", {})[ref] = paired_against(result, ref)
        out = Path(args.out)
        out.write_text(json.dumps(result, indent=1, default=float))
        out.with_suffix(".md").write_text(to_markdown(result))
        print(to_markdown(result))
        return
    if args.summarise:
        path = Path(args.summarise)
        result = json.loads(path.read_text())
        for ref in args.against:
            result.setdefault("against", {})[ref] = paired_against(result, ref)
        path.write_text(json.dumps(result, indent=1, default=float))
        path.with_suffix(".md").write_text(to_markdown(result))
        print(to_markdown(result))
        return

    from tqdm import tqdm

    from facerestore.pipeline import get_restorer, restore_crops, restore_photo

    names, clean = load_faces(args.ffhq, args.prior, parse_shard(args.shard) if args.shard else (0, 1))
    degs = degradations()
    if args.tasks:
        degs = {k: v for k, v in degs.items() if k in args.tasks.split(",")}
    scorer = Scorer()
    ispl = get_restorer("ispl", weights=REFERENCE_WEIGHTS)
    default = get_restorer(DEFAULT_METHOD)  # what `facerestore restore` runs
    ispl.progress = default.progress = False
    extra, sources = _extra_methods(args.methods, args.half)
    rows = BASE_ROWS + tuple(r for name in extra for r in (name, f"{name}+gate"))
    per: dict[str, dict[str, list[dict[str, float]]]] = {t: {r: [] for r in rows} for t in degs}
    gates: dict[str, dict[str, list[float]]] = {
        row: {t: [] for t in degs} for row in rows if row.endswith("+gate") or row == "default"
    }
    t0 = time.time()
    bar = tqdm(total=len(degs) * len(names), desc="sweep", unit="face")
    for task, fn in degs.items():
        for i in range(len(names)):
            gt = clean[i : i + 1]
            lq = fn(gt, face_seed(task, names[i])).clamp(0, 1)
            lq_np = lq[0].permute(1, 2, 0).numpy().copy()
            raw = restore_crops(ispl, [lq_np])[0]
            res = restore_photo(lq_np, default, aligned=True, upscale=1)
            gates["default"][task].append(res.faces[0].paste_weight)
            images = [("input", lq_np), ("ispl", raw), ("default", res.image)]
            for name, r in extra.items():
                images.append((name, restore_crops(r, [lq_np])[0]))
                gated = restore_photo(lq_np, r, aligned=True, upscale=1)
                gates[f"{name}+gate"][task].append(gated.faces[0].paste_weight)
                images.append((f"{name}+gate", gated.image))
            done: list[tuple[np.ndarray, dict[str, float]]] = []
            for row, img in images:
                same = [sc for im, sc in done if im.shape == img.shape and np.array_equal(im, img)]
                if not same:  # the default is often exactly the input (kept) or ISPL's output (passed)
                    pred = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
                    same = [scorer(pred, gt)]
                    done.append((img, same[0]))
                per[task][row].append(dict(same[0]))
            bar.update(1)
    bar.close()

    present = list(scorer.m)
    result = {
        "benchmark": "default_restorer",
        "seeding": SEEDING,
        "faces": len(names),
        "face_sets": f"{sum(n.startswith('ffhq') for n in names)} ffhq256 validation (x2 to 512), "
        f"{sum(n.startswith('prior') for n in names)} MobileStyleGAN samples",
        "rows": list(rows),
        "legend": {
            "ispl": f"{DEFAULT_METHOD} {REFERENCE_WEIGHTS} alone (the reference of every interval)",
            "default": f"restore_photo with {DEFAULT_METHOD} and its default weights "
            f"({Path(default.default_weights() or '').name}) + the quality gate",
        },
        "methods": {
            label: {
                "method": r.spec.name,
                "weights": sources[label][0] or "the method's own",
                "steps": sources[label][1],
                "weights_licence": r.spec.weights_licence,
                "precision": r.precision,
            }
            for label, r in extra.items()
        },
        "metrics_present": present,
        "metrics_missing": scorer.missing,
        "names": names,
        "per_face": {t: {r: per[t][r] for r in rows} for t in degs},
        "paste_weights": gates,
        "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "torch": torch.__version__,
        "command": "python benchmarks/default_restorer.py " + shlex.join(sys.argv[1:]),
    }
    if args.shard:
        result["shard"] = args.shard
    result = summarise(result)
    for ref in args.against:
        result.setdefault("against", {})[ref] = paired_against(result, ref)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
