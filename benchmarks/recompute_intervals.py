"""Recompute the paired 95% intervals of committed results with today's statistics, from their stored per-face values
(no image is restored again). Three corrections, each a reason a committed interval claimed too much:

1. **Small samples** (blind_detail, rls_blind_side, encoder_init, the reference benchmarks): intervals computed
   before 2026-12-07 used a plain percentile bootstrap, which on 2-12 faces excludes zero far more often than 5%;
   :func:`facerestore.metrics.stats.paired_bootstrap` now takes the wider of Hesterberg's expanded bootstrap and
   Student's t.
2. **Persons, not faces** (the reference benchmarks: stylegan_refs_*, honestface_refs, prior_sft_refs): each person
   gives two faces (blind and x8) from one query photo with the same reference sets; a claim about persons is
   resampled by person (the two differences averaged first).
3. **Shared degradation draws** (default_restorer_200faces): its 8 shards seeded each face with 1000 * task index +
   the face's position *in its shard*, so the 25 positions shared one draw across 8 faces; resampled by draw (the 8
   differences of a position averaged first). The script now seeds by the face's name (``face_seed``).

    python benchmarks/recompute_intervals.py     # writes results/intervals_recomputed.{json,md}

Only intervals change; means are the committed ones (the draw-clustered mean equals the face mean: 8 faces per draw).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
SMALL = ("blind_detail", "rls_blind_side", "encoder_init")
REFS = ("stylegan_refs_heldout", "stylegan_refs_heldout_all", "stylegan_refs_mobilestylegan", "honestface_refs",
        "prior_sft_refs")
METRICS_SHOWN = ("psnr", "fed", "id_mobileface", "niqe")


def _ci(diff: list[float] | np.ndarray) -> tuple[float, float, float]:
    from facerestore.metrics.stats import paired_bootstrap

    return paired_bootstrap(np.asarray(diff, np.float64))


def _fmt(ci: tuple[float, float, float] | list[float] | None) -> str:
    if ci is None or any(v is None or not np.isfinite(v) for v in ci):
        return "n/a"
    m, lo, hi = ci
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def small_sample_rows(name: str) -> list[dict]:
    """Every 'A - B' row of a per-face result file, recomputed from A's and B's per-face values."""
    d = json.loads((RESULTS / f"{name}.json").read_text())
    blocks = d["rows"] if all(isinstance(v, dict) and "per_face" not in v for v in d["rows"].values()) else \
        {"": d["rows"]}
    out = []
    for deg, rows in blocks.items():
        for key in rows:
            if " - " not in key or not isinstance(rows[key], dict):
                continue
            a, b = key.split(" - ")
            a = a if a in rows else f"{key.split(' ')[0]} {a}".strip()  # "<method> detail - full"
            b = b if b in rows else f"{a.rsplit(' ', 1)[0]} {b}".strip()
            if a not in rows or b not in rows or "per_face" not in rows[a] or "per_face" not in rows[b]:
                continue
            for m in METRICS_SHOWN:
                if m not in rows[a]["per_face"] or m not in rows[b]["per_face"]:
                    continue
                diff = np.subtract(rows[a]["per_face"][m], rows[b]["per_face"][m], dtype=np.float64)
                old = rows[key].get(m)
                out.append({"file": name, "block": deg, "pair": f"{a} - {b}", "metric": m, "n": len(diff),
                            "committed": old if isinstance(old, list) else None, "recomputed": list(_ci(diff))})
    return out


def refs_rows(name: str) -> list[dict]:
    """The reference benchmarks' pairs, by face (today's intervals) and by person (the two faces averaged)."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    out = []
    for pair, metrics in d["summary"]["pairs"].items():
        a, b = pair.split(" - ")
        for m in ("id_mobileface", "fed"):
            if m not in metrics:
                continue
            per_person: dict[int, list[float]] = defaultdict(list)
            faces = []
            for r in d["records"]:
                s = r["scores"]
                if a in s and b in s and m in s[a] and m in s[b]:
                    v = float(s[a][m]) - float(s[b][m])
                    faces.append(v)
                    per_person[int(r["person"])].append(v)
            persons = [float(np.mean(v)) for v in per_person.values()]
            out.append({"file": name, "pair": pair, "metric": m, "faces": len(faces), "persons": len(persons),
                        "committed": metrics[m], "by_face": list(_ci(faces)), "by_person": list(_ci(persons))})
    return out


def _shard_positions(names: list[str], n_ffhq: int, n_prior: int, shards: int) -> list[int]:
    """Each face's position in its shard (what the old seed used), from its name."""
    from default_restorer import shard_indices  # the sweep's own split

    files = sorted(p.name for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")[:n_ffhq]
    pos = {}
    for k in range(shards):
        ffhq_ids, prior_ids = shard_indices(len(files), n_prior, (k, shards))
        for j, i in enumerate(ffhq_ids):
            pos[f"ffhq/{files[i]}"] = j
        for j, i in enumerate(prior_ids):
            pos[f"prior/9999-{i}"] = len(ffhq_ids) + j
    return [pos[n] for n in names]


def sweep_rows() -> list[dict]:
    d = json.loads((RESULTS / "default_restorer_200faces.json").read_text())
    if not (DATA / "ffhq256").is_dir():
        print("needs ../shared/data/ffhq256 to place the 200-face sweep's faces in their shards", file=sys.stderr)
        return []
    names = d["names"]
    n_prior = sum(n.startswith("prior/") for n in names)
    shards = int(d.get("shards", 8)) if isinstance(d.get("shards"), int) else len(d.get("shards") or []) or 8
    draw = _shard_positions(names, len(names) - n_prior, n_prior, shards)
    out = []
    for task, rows in d["per_face"].items():
        for m in ("psnr", "id_mobileface", "fed", "niqe"):
            a = [f.get(m) for f in rows["default"]]
            b = [f.get(m) for f in rows["input"]]
            if any(v is None for v in a + b):
                continue
            diff = np.subtract(a, b, dtype=np.float64)
            groups: dict[int, list[float]] = defaultdict(list)
            for g, v in zip(draw, diff):
                groups[g].append(v)
            clustered = [float(np.mean(v)) for v in groups.values()]
            out.append({"file": "default_restorer_200faces", "task": task, "pair": "default - input", "metric": m,
                        "faces": len(diff), "draws": len(groups), "by_face": list(_ci(diff)),
                        "by_draw": list(_ci(clustered))})
    return out


def main() -> int:
    small = [r for name in SMALL for r in small_sample_rows(name)]
    refs = [r for name in REFS for r in refs_rows(name)]
    sweep = sweep_rows()
    (RESULTS / "intervals_recomputed.json").write_text(json.dumps(
        {"command": "python benchmarks/recompute_intervals.py", "small_samples": small, "references": refs,
         "sweep_200faces": sweep}, indent=1) + "\n")
    lines = ["# Committed intervals, recomputed (`python benchmarks/recompute_intervals.py`)", "",
             "Mean difference and paired 95% interval; * marks an interval that excludes 0. See the script's "
             "docstring for the three corrections.", "",
             "## 1. Small samples: the committed interval (plain percentile bootstrap) and today's", "",
             "| file | block | pair | metric | faces | committed | recomputed |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['block']} | {r['pair']} | {r['metric']} | {r['n']} | {_fmt(r['committed'])} | "
              f"{_fmt(r['recomputed'])} |" for r in small]
    lines += ["", "## 2. Reference benchmarks: by face (today's statistics) and by person (two faces averaged)", "",
              "| file | pair | metric | faces / persons | committed | by face | by person |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['pair']} | {r['metric']} | {r['faces']} / {r['persons']} | {_fmt(r['committed'])} | "
              f"{_fmt(r['by_face'])} | {_fmt(r['by_person'])} |" for r in refs]
    lines += ["", "## 3. The 200-face sweep: default - input by face and by shared degradation draw", "",
              "| task | metric | faces / draws | by face | by draw |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['metric']} | {r['faces']} / {r['draws']} | {_fmt(r['by_face'])} | "
              f"{_fmt(r['by_draw'])} |" for r in sweep]
    (RESULTS / "intervals_recomputed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()  # --help; no options
    sys.exit(main())
