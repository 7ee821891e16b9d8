"""How well does the reference check tell the right person's photos from another person's?

Every method that takes ``--refs`` first compares each face with the references
(:func:`facerestore.methods.restorer.check_refs_identity`): the median dlib distance between the face, resized to
the method's resolution, and the references; above 0.75 the references are taken for another person (a group
photo's other faces are restored without them; a photo where no face passes stops with one line). This benchmark
measures that decision on degraded faces, the case it exists for.

Persons: the photo persons of ../shared/data/photos with at least 3 photos (the test persons of
``benchmarks/honestface_refs.py``: one photo is the query, the person's other photos the right references, as
many photos of the next person the wrong ones) and, with ``--synth DIR``, synthetic validation persons of
``facerestore synth --views 3`` (the sample is the query, its 3 views the right references, the next person's
views the wrong ones). Each query is measured clean and degraded (``blind``: ``realworld-vqfr``; ``x8``: bicubic
x8 down and back; the degradations of ``honestface_refs.py``) at each ``--sizes`` resolution (128: honestface's
compact model; 64: the built-in StyleGAN prior; 512: prior-sft).

Reported per degradation and size: ROC AUC of right vs wrong distances, the share of right references that pass
(kept) and of wrong ones that pass (let through) at the methods' fixed threshold (0.75), at others, and under the
photo pipeline's rule (:func:`facerestore.pipeline.refs_threshold`: 0.65 for a sharp face up to 0.75 for a blurred
one, by the face's detail; its constants were chosen on the synthetic validation persons, so the photo persons
test it). With ``--cohort DIR`` (a
``facerestore synth`` folder of other persons) it also measures cohort-normalised scores (the distance minus the
mean distance to the k nearest cohort persons, the z-score against the cohort): an idea for making the check
adapt to degradation, measured here and not shipped unless it separates better.

    facerestore synth -n 12 -o /tmp/synthval --size 256 --seed 777 --truncation 0.7 --views 3
    facerestore synth -n 48 -o /tmp/synthtrain --size 128 --seed 4242 --truncation 0.7 --views 3
    python benchmarks/refs_check.py --synth /tmp/synthval --cohort /tmp/synthtrain     # about 3 min

Writes benchmarks/results/refs_check.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from honestface_refs import PHOTOS, SIZE, degrade_face
from ref_weight_validation import synth_persons

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("clean", "blind", "x8")
THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8)
COHORT_K = (1, 5, 10)


def photo_persons() -> list[tuple[torch.Tensor, list[str]]]:
    """(query face (1, 3, SIZE, SIZE), the person's other photo names) per photo person with >= 3 photos."""
    from facerestore.methods.honestface.train import photo_identities, query_photo
    from facerestore.pipeline import prepare_refs

    out = []
    for g in photo_identities(PHOTOS):
        q = query_photo(g)
        if q:
            out.append((prepare_refs([PHOTOS / q], SIZE), [n for n in g if n != q]))
    return out


def measure(queries: list[torch.Tensor], right: list[torch.Tensor], embed, sizes: list[int],
            cohort: torch.Tensor | None) -> list[dict]:
    """One record per query x degradation x size: the check's distance to the right and the wrong references
    (the next person's), and the sorted distances to the cohort persons when given."""
    from facerestore.methods.restorer import refs_check_distance
    from facerestore.nn.identity import embedding_distance
    from facerestore.pipeline import refs_threshold
    from facerestore.quality_gate import face_sharpness

    recs = []
    n = len(queries)
    for s in sizes:
        ref_emb = [embed(r, s) for r in right]
        coh = None if cohort is None else embed(cohort, s)
        for i, q in enumerate(queries):
            for kind in KINDS:
                lq = q if kind == "clean" else degrade_face(q, kind, seed=1000 + i)
                e = embed(lq, s)[0]
                crop = lq[0].permute(1, 2, 0).numpy()  # the aligned crop, as the photo pipeline has it
                rec = {"query": i, "kind": kind, "size": s, "detail": face_sharpness(crop),
                       "threshold": refs_threshold(crop),
                       "right": refs_check_distance(embedding_distance(ref_emb[i], e)),
                       "wrong": refs_check_distance(embedding_distance(ref_emb[(i + 1) % n], e))}
                if coh is not None:  # what the cohort scores need: the nearest persons, the mean and spread
                    dc = np.sort(embedding_distance(coh, e).double().numpy())
                    rec.update(cohort_nearest=[round(float(v), 5) for v in dc[: max(COHORT_K)]],
                               cohort_mean=float(dc.mean()), cohort_std=float(dc.std()))
                recs.append(rec)
    return recs


def summarize(recs: list[dict]) -> dict:
    """Per (set, size, kind, all degraded): AUC, pass rates at each threshold, and the cohort scores' AUCs."""
    from facerestore.methods.restorer import REFS_MAX_DISTANCE
    from facerestore.metrics.stats import roc_auc

    out: dict = {}
    keys = sorted({(r["set"], r["size"]) for r in recs})
    for st, s in keys:
        for kind in (*KINDS, "degraded"):
            sel = [r for r in recs if r["set"] == st and r["size"] == s
                   and (r["kind"] == kind or (kind == "degraded" and r["kind"] != "clean"))]
            if not sel:
                continue
            right = np.array([r["right"] for r in sel])
            wrong = np.array([r["wrong"] for r in sel])
            limit = np.array([r["threshold"] for r in sel])
            row = {"n": len(sel), "auc": roc_auc(-right, -wrong),
                   "adaptive": {"threshold_mean": float(limit.mean()), "right_pass": float((right <= limit).mean()),
                                "wrong_pass": float((wrong <= limit).mean())},
                   "right_mean": float(right.mean()), "wrong_mean": float(wrong.mean()),
                   "right_pass": {f"{t:g}": float((right <= t).mean()) for t in THRESHOLDS},
                   "wrong_pass": {f"{t:g}": float((wrong <= t).mean()) for t in THRESHOLDS},
                   "shipped_threshold": REFS_MAX_DISTANCE}
            if "cohort_nearest" in sel[0]:
                alt = {}
                for k in COHORT_K:
                    m = np.array([np.mean(r["cohort_nearest"][:k]) for r in sel])
                    alt[f"minus nearest {k}"] = roc_auc(-(right - m), -(wrong - m))
                mu, sd = np.array([r["cohort_mean"] for r in sel]), np.array([r["cohort_std"] for r in sel])
                alt["z-score"] = roc_auc(-(right - mu) / sd, -(wrong - mu) / sd)
                row["cohort_auc"] = alt
            out[f"{st} {s} {kind}"] = row
    return out


def to_markdown(res: dict) -> str:
    s = res["summary"]
    t = f"{res['shipped_threshold']:g}"
    lines = [
        "# The reference check: right vs another person's references on degraded faces", "",
        f"`{res['command']}`", "",
        f"{res['seconds'] / 60:.1f} min on {res['machine']}. Distance: the check's (median dlib distance between the "
        "face, resized to the size, and the references); pass = at most the threshold (shipped "
        f"{t}). Sets: {', '.join(f'{k} ({v})' for k, v in res['sets'].items())}.", "",
        "The shipped rule (`pipeline.refs_threshold`, chosen on the synthetic validation persons): 0.65 for a sharp "
        "face, 0.75 for a blurred one, log-linear in its detail between; the methods' own check (their API) stops at a "
        f"fixed {t}.", "",
        f"| set size degradation | n | ROC AUC | right mean | wrong mean | right kept at {t} | wrong let through "
        f"at {t} | mean threshold of the rule | right kept by it | wrong let through by it |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in s.items():
        a = row["adaptive"]
        lines.append(f"| {key} | {row['n']} | {row['auc']:.3f} | {row['right_mean']:.3f} | {row['wrong_mean']:.3f} | "
                     f"{row['right_pass'][t]:.2f} | {row['wrong_pass'][t]:.2f} | {a['threshold_mean']:.3f} | "
                     f"{a['right_pass']:.2f} | {a['wrong_pass']:.2f} |")
    lines += ["", "Other thresholds, degraded faces (blind + x8): right kept / wrong let through", "",
              "| set size | " + " | ".join(f"{x:g}" for x in THRESHOLDS) + " |",
              "|---|" + "---|" * len(THRESHOLDS)]
    for key, row in s.items():
        if key.endswith("degraded"):
            lines.append(f"| {key.rsplit(' ', 1)[0]} | " + " | ".join(
                f"{row['right_pass'][f'{x:g}']:.2f} / {row['wrong_pass'][f'{x:g}']:.2f}" for x in THRESHOLDS) + " |")
    coh = {k: r["cohort_auc"] for k, r in s.items() if "cohort_auc" in r and not k.endswith(" clean")}
    if coh:
        names = list(next(iter(coh.values())))
        lines += ["", f"Cohort-normalised scores (cohort: {res['cohort']}), ROC AUC next to the plain distance's:", "",
                  "| set size degradation | distance | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for key, alt in coh.items():
            lines.append(f"| {key} | {s[key]['auc']:.3f} | " + " | ".join(f"{alt[n]:.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", default=None, help="a `facerestore synth --views 3` folder of validation persons")
    ap.add_argument("--cohort", default=None, help="a `facerestore synth` folder of other persons (cohort scores)")
    ap.add_argument("--sizes", default="64,128,512", help="resolutions the check runs at (comma-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "refs_check"))
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"{PHOTOS} is missing")
    import torch.nn.functional as F

    from facerestore.methods.restorer import REFS_MAX_DISTANCE, resize_crop
    from facerestore.pipeline import prepare_refs
    from facerestore.train.losses import IdentityLoss

    torch.set_num_threads(max(1, args.threads))
    t0 = time.time()
    net = IdentityLoss().eval()

    def embed(x: torch.Tensor, s: int) -> torch.Tensor:
        with torch.no_grad():
            return net.embed(resize_crop(x.float(), (s, s)))

    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    cohort = None
    if args.cohort:
        cohort = torch.cat([F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
                            if x.shape[-1] != SIZE else x for x, _ in synth_persons(Path(args.cohort))])
    recs, sets = [], {}
    photos = photo_persons()
    right = [prepare_refs([PHOTOS / n for n in others], SIZE) for _, others in photos]
    for r in measure([q for q, _ in photos], right, embed, sizes, cohort):
        recs.append({"set": "photos", **r})
    sets["photos"] = f"{len(photos)} photo persons"
    if args.synth:
        persons = synth_persons(Path(args.synth))
        for r in measure([s for s, _ in persons], [v for _, v in persons], embed, sizes, cohort):
            recs.append({"set": "synth", **r})
        sets["synth"] = f"{len(persons)} synthetic validation persons ({Path(args.synth).name})"
    summary = summarize(recs)
    res = {"benchmark": "refs_check", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
           "seconds": time.time() - t0, "machine": f"{platform.machine()} {os.cpu_count()} cores",
           "shipped_threshold": REFS_MAX_DISTANCE, "sizes": sizes, "sets": sets,
           "cohort": None if cohort is None else f"{cohort.shape[0]} persons of {Path(args.cohort).name}",
           "summary": summary, "records": recs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one record per line: the file stays readable and small
    body = json.dumps({k: v for k, v in res.items() if k != "records"}, indent=1)[:-2]
    records = ",\n".join(json.dumps(r) for r in recs)
    out.with_suffix(".json").write_text(f'{body},\n "records": [\n{records}\n ]\n}}\n')
    out.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
