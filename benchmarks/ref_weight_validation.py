"""How strongly should reference photos pull a restoration? ``ref_weight`` chosen on validation persons.

Every method that takes ``--refs`` adds an identity term, ``ref_weight`` x the dlib distance between the restored face
and the references' mean embedding (:mod:`facerestore.methods.inversion.refs`). dlib is also what the term is
judged by if one is careless: a strong pull can move dlib's embedding without moving the person (the output "fits
dlib"). This benchmark chooses the weight with MobileFace (``id_mobileface``: no loss of ours uses it), on
**validation persons that the test set never sees**: synthetic persons of ``facerestore synth --views 3`` (each
MobileStyleGAN sample and three re-renderings of it with other pose, hair and background; same/different ROC AUC
0.95 by MobileFace, ``benchmarks/synth_identity_views.py``). The test of the chosen weights is
``benchmarks/honestface_refs.py`` on the real photo persons.

Per person: the sample (256 px) is degraded (``blind``: ``realworld-vqfr``; ``x8``: bicubic x8 down and back, the
degradations of ``honestface_refs.py``) and restored with the person's 3 views as references (``right``) and with
the next person's views (``wrong``, the control), at each ``--weights`` value; weight 0 runs the same optimisation
without the identity term. Scores against the clean sample: ``id_mobileface`` and FED (dlib, the term's own network).

``--method honestface`` measures a reference guidance that the method does not ship: the compact model's learned
reference pathway carries nothing (its output moves by about 6e-4 for a random prompt; the ``prompt`` block of the
results), so the experiment asks whether references can act at test time instead: ``--steps`` Adam steps (lr 0.05)
on the one-step latent, minimising the substitute multi-resolution loss between the output and the input at 32 px,
plus ``weight`` x the dlib distance to the references, decoded by the model's VAE.

    facerestore synth -n 12 -o /tmp/synthval --size 256 --seed 777 --truncation 0.7 --views 3
    python benchmarks/ref_weight_validation.py --synth /tmp/synthval --method prior-sft --steps 20 --half \\
        --weights 0,0.25,1 --threads 2          # about 30 min
    python benchmarks/ref_weight_validation.py --synth /tmp/synthval --method honestface --weights 0,0.05,0.25

Writes benchmarks/results/ref_weight_<method>.json and .md. Seed 777 is used by no training of ours (the shipped
weights were trained on ffhq256, stylegan256 and the photo persons; none on ``facerestore synth`` output).
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
import torch.nn.functional as F
from honestface_refs import PRIOR_METHODS, SIZE, STYLEGAN_METHODS, bootstrap, degrade_face

ROOT = Path(__file__).resolve().parents[1]
ID = "id_mobileface"
METRICS = (ID, "fed")
GUIDANCE_LR = 0.05  # Adam on the one-step latent (honestface); the latents' spread is about 1
GUIDANCE_SIDE = 32  # the input is compared at 32 px: x8 of 256 px, where every degradation here stays faithful


def synth_persons(folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(sample (1, 3, S, S), views (V, 3, S, S)) per person of a ``facerestore synth --views V`` folder, in [0, 1]."""
    from facerestore import io

    manifest = json.loads((folder / "manifest.json").read_text())
    views = int(manifest.get("views", {}).get("count", 0))
    if views < 1:
        sys.exit(f"{folder}: no views (write it with `facerestore synth --views 3`)")

    def read(name: str) -> torch.Tensor:
        x = torch.from_numpy(io.read_rgb(folder / name)).permute(2, 0, 1)[None].float()
        return x if x.shape[-1] == SIZE else F.interpolate(x, size=(SIZE, SIZE), mode="area")

    out = []
    for entry in manifest["files"]:
        i = int(entry["index"])
        out.append((read(entry["file"]), torch.cat([read(f"view_{i:06d}_{v}.png") for v in range(1, views + 1)])))
    return out


class HonestFaceGuidance:
    """The test-time reference guidance of the module docstring on the built-in compact HonestFace model."""

    def __init__(self, steps: int, weights: str | None = None) -> None:
        from facerestore.methods.honestface.model import load_honestface
        from facerestore.methods.honestface.restorer import builtin_weights
        from facerestore.methods.inversion.losses import make_loss
        from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet
        from facerestore.train.losses import IdentityLoss

        dlib_net = load_dlib_face_resnet()
        self.net = load_honestface(weights or builtin_weights(), features=dlib_net).eval()
        self.identity = IdentityLoss(net=dlib_net).eval()
        self.loss = make_loss("substitute", min_side=8)
        self.steps = int(steps)
        self.size = int(self.net.config.size)

    def restore(self, lq: torch.Tensor, refs: torch.Tensor, weight: float) -> torch.Tensor:
        from facerestore.methods.honestface.model import ReferenceSet
        from facerestore.methods.inversion.refs import ReferenceIdentity

        s = self.size
        x = F.interpolate(lq, size=(s, s), mode="area")
        refs = F.interpolate(refs, size=(s, s), mode="area")
        eyes, emb, mask, _ = ReferenceSet(refs, self.identity).inputs_for(x)
        ref_id = ReferenceIdentity(refs, self.identity)
        with torch.no_grad():
            _, z0 = self.net(x, eyes, emb, mask, return_latent=True)
        target = F.interpolate(x, size=(GUIDANCE_SIDE, GUIDANCE_SIDE), mode="area")
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=GUIDANCE_LR)
        gen = torch.Generator().manual_seed(0)
        for _ in range(self.steps):
            y = self.net.backbone.decode(z)
            loss = self.loss(F.interpolate(y, size=(GUIDANCE_SIDE, GUIDANCE_SIDE), mode="area"), target, None, gen)
            if weight > 0:
                loss = loss + weight * ref_id.distance(y.clamp(0, 1))
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            y = self.net.backbone.decode(z).clamp(0, 1)
        return F.interpolate(y, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)

    def prompt_sensitivity(self, lq: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        """What the one-step model does with its prompt, on degraded faces ``lq`` of the ``clean`` ones: the mean
        absolute change of the output (in [0, 1] units) when the prompt p is replaced by zeros, by Gaussian noise of
        p's scale, by another face's p; how far references move p (relative norm); how far the UNet takes the output
        from the VAE's plain reconstruction of the degraded face (0: the UNet passes the latent through, the VAE does
        all the restoring); the output's distance to the clean face."""
        s = self.size
        x, hq = F.interpolate(lq, size=(s, s), mode="area"), F.interpolate(clean, size=(s, s), mode="area")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            p = self.net.prompt(x)
            y = self.net.backbone(x, p)
            noise = torch.randn(p.shape, generator=g) * p.std()
            eyes = torch.rand((x.shape[0], 2, 3, 32, 32), generator=g)
            emb = torch.randn((x.shape[0], 3, 128), generator=g)
            p_refs = self.net.prompt(x, eyes, emb, torch.ones(x.shape[0], 3, dtype=torch.bool))
            autoencoded = self.net.backbone.decode(self.net.backbone.encode(x))
            return {"zero_prompt": float((self.net.backbone(x, torch.zeros_like(p)) - y).abs().mean()),
                    "random_prompt": float((self.net.backbone(x, noise) - y).abs().mean()),
                    "other_face_prompt": float((self.net.backbone(x, p.roll(1, 0)) - y).abs().mean()),
                    "refs_move_prompt_relative": float((p_refs - p).norm() / p.norm()),
                    "unet_vs_autoencoder": float((y - autoencoded).abs().mean()),
                    "output_vs_clean_l1": float((y.clamp(0, 1) - hq).abs().mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", required=True, help="a `facerestore synth --views 3` folder (the validation persons)")
    ap.add_argument("--method", required=True, choices=("honestface", *PRIOR_METHODS))
    ap.add_argument("--weights", default="0,0.25,1", help="ref_weight values (comma-separated; 0 = no identity term)")
    ap.add_argument("--steps", type=int, default=20, help="optimisation steps per face (all weights alike)")
    ap.add_argument("--prior", default=None, help="generator of robust-inversion / rls / rls-plus (default theirs)")
    ap.add_argument("--model", default=None, help="honestface weights (.safetensors; default the built-in model)")
    ap.add_argument("--persons", type=int, default=0, help="first N persons only (0 = all)")
    ap.add_argument("--half", action="store_true", help="the prior methods in reduced precision (bf16 on a CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="default benchmarks/results/ref_weight_<method>")
    args = ap.parse_args()
    from facerestore import metrics

    torch.set_num_threads(max(1, args.threads))
    weights = [float(w) for w in args.weights.split(",")]
    persons = synth_persons(Path(args.synth))
    manifest = json.loads((Path(args.synth) / "manifest.json").read_text())
    synth = {k: manifest.get(k) for k in ("generator", "size", "seed", "truncation", "count")}
    if args.persons:
        persons = persons[: args.persons]
    if len(persons) < 2:
        sys.exit("need at least 2 persons (the wrong-person control)")
    t0 = time.time()
    info: dict = {}
    if args.method == "honestface":
        guided = HonestFaceGuidance(args.steps, args.model)
        info["model"] = args.model or "builtin"
        clean_all = torch.cat([q for q, _ in persons])
        lq_all = torch.cat([degrade_face(q, "blind", seed=1000 + i) for i, (q, _) in enumerate(persons)])
        info["prompt"] = guided.prompt_sensitivity(lq_all, clean_all)
        print(json.dumps(info["prompt"]), flush=True)

        def restore(lq: torch.Tensor, refs: torch.Tensor, w: float) -> torch.Tensor:
            return guided.restore(lq, refs, w)
    else:
        from facerestore.methods import load_restorer
        from facerestore.methods.registry import REGISTRY
        from facerestore.methods.restorer import resize_crop

        budget = REGISTRY.restorer_class(args.method).budget_options(args.steps)
        prior = args.prior if args.method in STYLEGAN_METHODS else None
        restorers = {w: load_restorer(args.method, weights=prior, half=args.half, progress=False, ref_weight=w,
                                      **budget) for w in weights}
        info["budget"] = budget
        info["prior"] = prior or "method default"
        info["prior_size"] = restorers[weights[0]].spec.size

        def restore(lq: torch.Tensor, refs: torch.Tensor, w: float) -> torch.Tensor:
            r = restorers[w]
            return r.restore(lq, refs=resize_crop(refs, (r.spec.size, r.spec.size)), force_refs=True, size=(SIZE, SIZE))

    judge = {name: metrics.create(name, aligned=True) for name in METRICS}
    records = []
    for pi, (clean, views) in enumerate(persons):
        wrong_views = persons[(pi + 1) % len(persons)][1]
        for kind in ("blind", "x8"):
            lq = degrade_face(clean, kind, seed=1000 + pi)
            rec: dict = {"person": pi, "degradation": kind, "scores": {}}
            for w in weights:
                for which, refs in (("right", views), ("wrong", wrong_views)):
                    if w == 0 and which == "wrong":
                        continue  # without the identity term the references change nothing
                    y = restore(lq, refs, w)
                    with torch.no_grad():
                        rec["scores"][f"{which} {w:g}"] = {n: float(fn(y, clean)) for n, fn in judge.items()}
            records.append(rec)
            print(json.dumps({"person": pi, "kind": kind, ID: {k: round(v[ID], 4) for k, v in rec["scores"].items()},
                              "s": round(time.time() - t0)}), flush=True)
    summary = summarize(records, weights)
    result = {"benchmark": "ref_weight_validation", "method": args.method, "weights": weights, "steps": args.steps,
              "persons": len(persons), "faces": len(records), "synth": synth, "info": info,
              "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "seconds": time.time() - t0,
              "machine": f"{platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} thread(s)",
              "summary": summary, "records": records}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"ref_weight_{args.method}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


def summarize(records: list[dict], weights: list[float]) -> dict:
    """Mean per row and the paired differences: each weight against no identity term (right and wrong references),
    wrong against right at each weight, and each weight against the previous one."""
    rows = list(records[0]["scores"])
    summary: dict = {"rows": {r: {n: float(np.mean([rc["scores"][r][n] for rc in records])) for n in METRICS}
                              for r in rows}, "pairs": {}}
    base = f"right {weights[0]:g}"
    pairs = []
    for i, w in enumerate(weights[1:], 1):
        pairs += [(f"right {w:g}", base), (f"wrong {w:g}", base), (f"wrong {w:g}", f"right {w:g}")]
        if i > 1:
            pairs.append((f"right {w:g}", f"right {weights[i - 1]:g}"))
    for a, b in pairs:
        summary["pairs"][f"{a} - {b}"] = {n: bootstrap(np.array([rc["scores"][a][n] - rc["scores"][b][n]
                                                                 for rc in records])) for n in METRICS}
    for kind in ("blind", "x8"):
        sub = [rc for rc in records if rc["degradation"] == kind]
        summary[f"{ID} {kind}"] = {r: float(np.mean([rc["scores"][r][ID] for rc in sub])) for r in rows}
    return summary


def to_markdown(res: dict) -> str:
    def cell(v: list[float]) -> str:
        mean, lo, hi = v
        s = f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        return f"**{s}**" if lo > 0 or hi < 0 else s

    lines = [f"# ref_weight on validation persons: {res['method']} ({res['persons']} synthetic persons x blind/x8 = "
             f"{res['faces']} faces, {res['steps']} steps per face)", "", f"`{res['command']}`", "",
             f"Validation persons: `facerestore synth -n {res['synth']['count']} -o DIR --size {res['synth']['size']} "
             f"--seed {res['synth']['seed']} --truncation {res['synth']['truncation']} --views 3` (no training of ours "
             "used these seeds).", "",
             f"{res['seconds'] / 60:.0f} min on {res['machine']}. Judge: `{ID}` (MobileFace cosine distance, no loss "
             "of ours uses it; same person under 0.71); FED is dlib's distance, the identity term's own network. "
             "Lower is better. Intervals: paired 95% bootstrap over the faces; **bold** excludes 0.", ""]
    if "prompt" in res["info"]:
        p = res["info"]["prompt"]
        lines += [f"Weights: {res['info'].get('model', 'builtin')}.", "",
                  f"Prompt sensitivity of the compact model (mean absolute change of the output in [0, 1] units): zero "
                  f"prompt {p['zero_prompt']:.2g}, random prompt {p['random_prompt']:.2g}, another face's prompt "
                  f"{p['other_face_prompt']:.2g}; references move the prompt by {p['refs_move_prompt_relative']:.2f} "
                  f"of its norm; the output differs from the VAE's reconstruction of the degraded face by "
                  f"{p['unet_vs_autoencoder']:.3f} (what the UNet does); output vs clean face "
                  f"{p['output_vs_clean_l1']:.3f} (blind-degraded faces at the model's size).", ""]
    lines += ["| row | id_mobileface | FED |", "|---|---|---|"]
    lines += [f"| {r} | {v[ID]:.4f} | {v['fed']:.4f} |" for r, v in res["summary"]["rows"].items()]
    lines += ["", "| pair | id_mobileface | FED |", "|---|---|---|"]
    lines += [f"| {k} | {cell(v[ID])} | {cell(v['fed'])} |" for k, v in res["summary"]["pairs"].items()]
    for kind in ("blind", "x8"):
        by = res["summary"].get(f"{ID} {kind}", {})
        lines += ["", f"{ID}, {kind} only: " + ", ".join(f"{r} {v:.4f}" for r, v in by.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
