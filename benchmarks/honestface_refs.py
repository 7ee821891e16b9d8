"""Issue 17's acceptance at CPU scale: do reference photos help HonestFace's built-in compact model?

For every person of ../shared/data/photos with at least 3 photos (identities paired by master.csv and
face-recognition-pivot.csv; ``methods.honestface.train.photo_identities``): the person's query photo (the
lowest-numbered one, never used in training) is aligned at 256 px (FFHQ template, largest face), heavily degraded
(``blind``: ``realworld-vqfr``, the heavier GFPGAN-style blind mix; ``x8``: bicubic down x8 and back), and
restored by ``honestface``:

- ``input``: the degraded face itself; ``none``: no references; ``one``: 1 reference (the person's next photo);
- ``all``: all of the person's other photos; ``wrong``: as many photos of another person (the next person in the
  list; ``force_refs=True``, otherwise the restorer refuses them: the refusal rate is reported too).

``--methods`` adds the prior methods that use references (``robust-inversion``, ``rls``, ``rls-plus``, and
``prior-sft`` through its refinement: an identity term pulls the generated face toward the references' mean dlib
embedding) in the same run, each with four rows: ``METHOD none`` (no references), ``METHOD one`` (the person's next
photo), ``METHOD all`` (all of the person's other photos) and ``METHOD wrong`` (the control: as many photos of the
next person); refused faces are counted and then forced, as for honestface. Methods whose optimisation is an
optional refinement (prior-sft) add ``METHOD 0 steps``: the network alone, what a user gets without ``--steps`` and
references. They restore the 256 px
face at their prior's resolution (the photo pipeline's blind mode) with a small budget, ``--steps`` per face
(default 30; recorded in the output, as are the prior and ``ref_weight``; for prior-sft every row refines the
encoder's latents for ``--steps``, so the pairs isolate the references): MobileStyleGAN 1024 px costs about 4 s a
step on one core, the built-in 64 px prior (``--prior builtin:stylegan2-face-64.safetensors``) about 0.1 s,
prior-sft at 512 px about 1.3 s with ``--half`` (bf16 on a CPU). ``--prior`` applies to the StyleGAN methods
(prior-sft's prior is fixed by its encoder).

Metrics against the clean 256 px face: ``id_mobileface`` (MobileFace cosine distance: no loss of ours uses it;
ROC AUC 0.995 on these photos' pairs), ``id_mfn`` (MobileFaceNet, also independent but weak: AUC 0.70), FED
(dlib; our identity loss and identity encoder use dlib, so FED is not independent), A-LD on eyes (``ald_e``) and
mouth (``ald_m``), LLE, NIQE, MS-SWD. Intervals: paired bootstrap (2000 resamples) over the faces of the mean
difference between two rows. Scale: 10 persons x 2 degradations = 20 faces (the paper: hundreds of identities at
512 px on GPUs), so intervals are wide.

    python benchmarks/honestface_refs.py        # ~10 min on one core
    python benchmarks/honestface_refs.py --methods honestface,robust-inversion --steps 30
    python benchmarks/honestface_refs.py --methods prior-sft --steps 20 --half --threads 2 \
        --out benchmarks/results/prior_sft_refs      # ~25 min on 2 cores
    python benchmarks/honestface_refs.py --methods robust-inversion,rls --steps 60 --threads 2 \
        --start-person 4 --persons 4 --resume   # persons 4-7 (0-based) only; continues an interrupted run

Every finished face is appended to ``OUT.partial.jsonl`` as it completes; ``--resume`` skips the faces found there
(same rows and command options required), so a long CPU run survives an interruption (the picture sheet then shows
only the faces of the last run). The file is removed once the results are written.

Writes benchmarks/results/honestface_refs.json and .md (``--grid docs/honestface_grid.png``: the picture).
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

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
SIZE = 256
ID = "id_mobileface"  # the independent identity judge of the per-degradation breakdown
METRICS = (ID, "id_mfn", "fed", "ald_e", "ald_m", "lle", "niqe", "ms_swd")
ROWS = ("input", "none", "one", "all", "wrong")
PAIRS = (("one", "none"), ("all", "none"), ("all", "one"), ("wrong", "none"), ("wrong", "all"), ("none", "input"))
STYLEGAN_METHODS = ("robust-inversion", "rls", "rls-plus")  # the StyleGAN-prior methods (their --prior)
PRIOR_METHODS = (*STYLEGAN_METHODS, "prior-sft")  # the prior methods with a reference term
METHODS = ("honestface", *PRIOR_METHODS)


def rows_and_pairs(methods: list[str], unrefined: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """The rows and paired differences of a run of ``methods`` (honestface's keep their historical names);
    ``unrefined``: the methods that also run without optimisation (row ``METHOD 0 steps``)."""
    rows, pairs = ["input"], []
    if "honestface" in methods:
        rows += [r for r in ROWS if r != "input"]
        pairs += list(PAIRS)
    for m in methods:
        if m in PRIOR_METHODS:
            rows += [f"{m} none", f"{m} one", f"{m} all", f"{m} wrong"]
            pairs += [(f"{m} one", f"{m} none"), (f"{m} all", f"{m} none"), (f"{m} all", f"{m} one"),
                      (f"{m} none", "input"), (f"{m} wrong", f"{m} none"), (f"{m} wrong", f"{m} all")]
            if m in unrefined:
                rows.append(f"{m} 0 steps")
                pairs += [(f"{m} all", f"{m} 0 steps"), (f"{m} none", f"{m} 0 steps"), (f"{m} 0 steps", "input")]
            if "honestface" in methods:
                pairs.append((f"{m} all", "all"))
    return rows, pairs


def bootstrap(d: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    from facerestore.metrics.stats import paired_bootstrap

    return list(paired_bootstrap(d, n, seed))


def degrade_face(x: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    from facerestore import degrade

    if kind == "blind":
        return degrade.apply(x.double(), "realworld-vqfr", generator=seed)[0].float().clamp(0, 1)
    small = degrade.resize(x, size=SIZE // 8, method="bicubic", antialias=True)
    return degrade.resize(small, size=SIZE, method="bicubic", antialias=False).clamp(0, 1)


def restore_with_refs(restorer, lq: torch.Tensor, refs: torch.Tensor, **kw) -> tuple[torch.Tensor, bool, float]:
    """(output, refused, the check's distance): references the check takes for another person are counted as
    refused, then used anyway (``force_refs=True``) so that every row has every face."""
    refused = False
    try:
        out = restorer.restore(lq, refs=refs, **kw)
    except Exception as exc:  # InputError: another person (the refusal)
        if "different person" not in str(exc):
            raise
        refused = True
        out = restorer.restore(lq, refs=refs, force_refs=True, **kw)
    return out, refused, restorer.last_refs_distance


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=0, help="N persons only, from --start-person on (0 = all)")
    ap.add_argument("--start-person", type=int, default=0,
                    help="skip the first K persons (e.g. 4: the persons whose runs set the ref_weight defaults); "
                         "the wrong-person control stays the next person of the whole list")
    ap.add_argument("--resume", action="store_true",
                    help="skip the faces already in OUT.partial.jsonl (written as each face finishes)")
    ap.add_argument("--weights", default=None, help="honestface weights (default: the built-in model)")
    ap.add_argument("--methods", default="honestface",
                    help=f"comma-separated methods to measure, among {', '.join(METHODS)} (default honestface)")
    ap.add_argument("--steps", type=int, default=30,
                    help="optimisation steps per face of the StyleGAN-prior methods (default 30; their own: 450/250)")
    ap.add_argument("--prior", default=None,
                    help="generator of the StyleGAN-prior methods (default theirs: MobileStyleGAN 1024 px when cached)")
    ap.add_argument("--ref-weight", type=float, default=None,
                    help="ref_weight of the prior methods (default: each method's own)")
    ap.add_argument("--half", action="store_true", help="the prior methods in reduced precision (bf16 on a CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "honestface_refs"))
    ap.add_argument("--grid", default=None, help="also write a picture sheet here (PNG): rows = the first "
                    "--grid-persons persons x blind / x8, columns = clean | every row of the table")
    ap.add_argument("--grid-persons", type=int, default=2)
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        sys.exit(f"--methods: choose among {', '.join(METHODS)}, got {args.methods!r}")
    if not PHOTOS.is_dir():
        sys.exit(f"{PHOTOS} is missing")
    from facerestore import metrics
    from facerestore.errors import InputError
    from facerestore.methods import load_restorer
    from facerestore.methods.honestface.train import photo_identities, query_photo
    from facerestore.methods.registry import REGISTRY
    from facerestore.pipeline import prepare_refs

    torch.set_num_threads(max(1, args.threads))
    t0 = time.time()
    r = load_restorer("honestface", weights=args.weights) if "honestface" in methods else None
    size = r.spec.size if r is not None else None
    priors, unrefined = {}, {}
    for meth in methods:
        if meth in PRIOR_METHODS:
            opts = REGISTRY.restorer_class(meth).budget_options(args.steps)
            if args.ref_weight is not None:
                opts["ref_weight"] = args.ref_weight
            weights = args.prior if meth in STYLEGAN_METHODS else None
            priors[meth] = load_restorer(meth, weights=weights, half=args.half, progress=False, **opts)
            try:  # methods whose optimisation is an optional refinement (prior-sft) also run without it
                unrefined[meth] = load_restorer(meth, weights=weights, half=args.half, progress=False,
                                                **REGISTRY.restorer_class(meth).budget_options(0))
            except InputError:
                pass
    rows, pairs = rows_and_pairs(methods, tuple(unrefined))
    groups = [g for g in photo_identities(PHOTOS) if query_photo(g)]
    chosen = select_persons(len(groups), args.start_person, args.persons)
    out = Path(args.out)
    partial = out.with_suffix(".partial.jsonl")
    run_key = {"methods": methods, "steps": args.steps, "prior": args.prior, "ref_weight": args.ref_weight,
               "half": args.half, "weights": args.weights, "rows": rows}
    done = [rc for rc in load_partial(partial, run_key) if rc["person"] in chosen] if args.resume else []
    if not args.resume:
        partial.unlink(missing_ok=True)
    finished = {(rc["person"], rc["degradation"]) for rc in done}
    m = {name: metrics.create(name, **({"aligned": True} if name not in ("niqe", "ms_swd") else {}))
         for name in METRICS}
    aligned: dict[tuple[str, int], torch.Tensor] = {}

    def face(name: str, s: int) -> torch.Tensor:
        if (name, s) not in aligned:
            aligned[(name, s)] = prepare_refs([PHOTOS / name], s)
        return aligned[(name, s)]

    records, sheet = list(done), {}
    if done:
        print(f"resuming: {len(done)} face(s) from {partial}", flush=True)
    for pi in chosen:
        group = groups[pi]
        if all((pi, kind) in finished for kind in ("blind", "x8")):
            continue
        q = query_photo(group)
        others = [n for n in group if n != q]
        wrong_group = groups[(pi + 1) % len(groups)]
        wrong = [n for n in wrong_group if n != query_photo(wrong_group)][: len(others)]
        clean = face(q, SIZE)
        refsets = {} if r is None else {"one": torch.cat([face(n, size) for n in others[:1]]),
                                        "all": torch.cat([face(n, size) for n in others]),
                                        "wrong": torch.cat([face(n, size) for n in wrong])}
        for kind in ("blind", "x8"):
            if (pi, kind) in finished:
                continue
            lq = degrade_face(clean, kind, seed=1000 + pi)
            outs = {"input": lq}
            dist, refused = {}, {}
            if r is not None:
                outs["none"] = r.restore(lq)
                for row, refs in refsets.items():
                    outs[row], refused[row], dist[row] = restore_with_refs(r, lq, refs)
            for meth, rm in priors.items():
                outs[f"{meth} none"] = rm.restore(lq, size=(SIZE, SIZE))
                if meth in unrefined:
                    outs[f"{meth} 0 steps"] = unrefined[meth].restore(lq, size=(SIZE, SIZE))
                for kind_refs, names in (("one", others[:1]), ("all", others), ("wrong", wrong)):
                    row, refs = f"{meth} {kind_refs}", torch.cat([face(n, rm.spec.size) for n in names])
                    outs[row], refused[row], dist[row] = restore_with_refs(rm, lq, refs, size=(SIZE, SIZE))
            rec = {"person": pi, "query": q, "degradation": kind, "refs": {"one": 1, "all": len(others),
                                                                            "wrong": len(wrong)},
                   "refs_distance": dist, "refused": refused, "scores": {}}
            with torch.no_grad():
                for row, y in outs.items():
                    rec["scores"][row] = {name: float(fn(y) if name == "niqe" else fn(y, clean)) for name, fn in
                                          m.items()}
            records.append(rec)
            append_partial(partial, run_key, rec)
            if args.grid and chosen.index(pi) < args.grid_persons:
                for row, y in {"clean": clean, **outs}.items():
                    sheet.setdefault(row, []).append(y.detach().float().clamp(0, 1))
            print(json.dumps({"person": pi, "kind": kind, ID: {k: round(v[ID], 4) for k, v in
                                                               rec["scores"].items()}}), flush=True)
    records.sort(key=lambda rc: (rc["person"], rc["degradation"]))
    summary = summarize(records, rows, pairs)
    meta = (json.loads(Path(str(r.default_weights())).with_suffix(".json").read_text())
            if r is not None and args.weights is None else {})
    result = {"benchmark": "honestface_refs", "methods": methods, "faces": len(records), "persons": len(chosen),
              "person_indices": chosen, "resumed_faces": len(done),
              "size": SIZE, "model_size": size,
              "weights": str(args.weights or "builtin:honestface-compact-128") if r is not None else None,
              "weights_steps": meta.get("steps"), "train_hours": meta.get("train_hours"),
              "prior_methods": {meth: {"steps_per_face": args.steps,
                                       "budget": REGISTRY.restorer_class(meth).budget_options(args.steps),
                                       "prior": (args.prior if meth in STYLEGAN_METHODS else None) or
                                       "method default", "prior_size": rm.spec.size, "precision": rm.precision,
                                       "ref_weight": rm.ref_weight, "loss": getattr(rm, "loss_kind", None)}
                                for meth, rm in priors.items()},
              "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "seconds": time.time() - t0,
              "machine": f"{platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} thread(s)",
              "summary": summary, "records": records}
    if args.grid and sheet:
        from sheets import labelled_sheet

        labelled_sheet({row: torch.cat(ys) for row, ys in sheet.items()}, args.grid)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(to_markdown(result))
    partial.unlink(missing_ok=True)
    print(to_markdown(result))
    return 0


def select_persons(n_groups: int, start: int, count: int) -> list[int]:
    """Indices of the persons to measure: ``count`` of them (0 = all) from index ``start`` on."""
    if not 0 <= start < n_groups:
        sys.exit(f"--start-person must be in [0, {n_groups - 1}] ({n_groups} persons have >= 3 photos), got {start}")
    stop = n_groups if count <= 0 else min(n_groups, start + count)
    return list(range(start, stop))


def append_partial(path: Path, run_key: dict, record: dict) -> None:
    """Append one finished face (with what the run measured it under) to the JSON-lines file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"run": run_key, "record": record}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_partial(path: Path, run_key: dict) -> list[dict]:
    """The faces an interrupted run finished; exits with one line when they were measured under other options.
    A torn last line (the run was killed mid-write) is dropped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry["run"] != json.loads(json.dumps(run_key)):
            sys.exit(f"{path} was written by a run with other options ({entry['run']}); remove it or drop --resume")
        records.append(entry["record"])
    return records


def summarize(records: list[dict], rows: list[str], pairs: list[tuple[str, str]]) -> dict:
    """Per-row means, paired bootstrap intervals of the ``pairs`` (first minus second) over all faces and of
    the identity judge per degradation, and the reference check's refusal rate per row."""
    summary: dict = {"rows": {}, "pairs": {}}
    for row in rows:
        summary["rows"][row] = {name: float(np.nanmean([rc["scores"][row][name] for rc in records]))
                                for name in METRICS}
    for a, b in pairs:
        summary["pairs"][f"{a} - {b}"] = {
            name: bootstrap(np.array([rc["scores"][a][name] - rc["scores"][b][name] for rc in records]))
            for name in METRICS}
    for kind in ("blind", "x8"):
        sub = [rc for rc in records if rc["degradation"] == kind]
        summary[f"{ID} {kind}"] = {f"{a} - {b}": bootstrap(np.array([rc["scores"][a][ID] - rc["scores"][b][ID]
                                                                       for rc in sub]))
                                   for a, b in pairs}
    summary["refusal_rate"] = {row: float(np.mean([rc["refused"][row] for rc in records])) for row in
                               records[0]["refused"]} if records else {}
    return summary


def to_markdown(res: dict) -> str:
    s = res["summary"]
    f = lambda v: "nan" if v != v else f"{v:.4g}"  # noqa: E731
    scale = f"{res['faces']} faces: {res['persons']} persons x blind/x8, {res['size']} px"
    if res.get("weights"):
        title = (f"# HonestFace references ({scale}; model {res['weights']}, {res['weights_steps']} steps, "
                 f"{res['train_hours'] or 0:.2f} h CPU)")
    else:  # a run of the prior methods alone
        title = f"# Reference photos for {', '.join(res.get('methods') or ['the prior methods'])} ({scale})"
    lines = [title, "", f"`{res.get('command', 'python benchmarks/honestface_refs.py')}`", ""]
    if res.get("person_indices"):
        idx = res["person_indices"]
        lines += [f"Persons {idx[0]}-{idx[-1]} of the list of persons with at least 3 photos (0-based; "
                  f"`methods.honestface.train.photo_identities`)"
                  + (f"; {res['resumed_faces']} face(s) measured by an interrupted earlier run (`--resume`)"
                     if res.get("resumed_faces") else "") + ".", ""]
    for m, v in res.get("prior_methods", {}).items():
        lines += [f"{m}: {v['steps_per_face']} steps per face {v['budget']}, prior {v['prior']} "
                  f"({v['prior_size']} px), ref_weight {v['ref_weight']:g}, loss {v['loss']}, "
                  f"{v.get('precision', 'fp32')}.", ""]
    lines += ["Mean per row (lower is better for every column).", "",
             "| row | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for row, v in s["rows"].items():
        lines.append(f"| {row} | " + " | ".join(f(v[n]) for n in METRICS) + " |")
    lines += ["", "Paired differences: mean [95% bootstrap interval] (negative = the first row is better).", "",
              "| pair | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for pair, v in s["pairs"].items():
        lines.append(f"| {pair} | " + " | ".join(f"{f(v[n][0])} [{f(v[n][1])}, {f(v[n][2])}]" for n in METRICS)
                     + " |")
    lines += ["", f"{ID} by degradation: " + "; ".join(
        f"{k}: " + ", ".join(f"{p} {f(v[0])} [{f(v[1])}, {f(v[2])}]" for p, v in s[k].items())
        for k in (f"{ID} blind", f"{ID} x8")), "",
        "Refusal rate of the reference check (median dlib distance > 0.75; refused faces are then forced): " +
        ", ".join(f"{k} {v:.2f}" for k, v in s["refusal_rate"].items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
