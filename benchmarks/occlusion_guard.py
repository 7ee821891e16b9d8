"""Occlusion guard (issue 15 item 4): does the default pipeline keep hands, microphones and glasses over a face as
they were, and leave faces without them alone? Guard on (the default) vs off (``--no-occlusion-guard``).

(a) Synthetic occluders. Faces: ffhq256 validation ids (numbers ending in 0, never trained on), bicubic-upsampled
to 512; ``--split test`` (default) takes the second 50 (00550-01090), ``--split tune`` the first 50 (00000-00540),
on which the guard's defaults were chosen (:mod:`facerestore.occlusion`): the default run is held out. Each face is
used as it is and with two of five occluders drawn over it before degradation (kinds cycled, seeded per face):

- ``hand``: a palm from below and four fingers over cheek and mouth, a skin tone of a six-tone palette (light to
  dark), lit from above, creases between the fingers;
- ``microphone``: a dark ball head with a grille and a highlight in front of the mouth / chin, handle to the edge;
- ``glasses``: thin frames (5-10 px at 512; black, brown or red) around the template's eyes, bridge and temples;
- ``sunglasses``: the same frames with dark filled lenses;
- ``patch``: a real patch (hair / background) cut from the top corner of another validation face, pasted as an
  ellipse over a random part of the face.

Every image (clean or occluded) is degraded by ``realworld-gfpgan`` with the face's seed, then restored at scale 1
by the default pipeline (``restore_photo``: ISPL, quality gate, identity, Face Mesh paste-back, colour matching)
with the face's template landmarks as its detection; the run without the guard replays the gate's decisions of the
run with it (same weights, so the two outputs differ by the guard only). Measured on the face box of the template
(x 96-416, y 144-464 at 512), against the clean occluded image (the ground truth):

- ``in``: inside the occluder (alpha > 0.5): PSNR (dB) and ``de_low``, the CIE Lab ΔE of both images blurred by a
  Gaussian of 1/32 of the side (16 px): is the occluder's colour still there (higher PSNR / lower ΔE = kept);
- ``out``: outside the occluder grown by 24 px: PSNR, and the guard's change there (mean |on - off| x255, share of
  pixels changed by more than 2/255): should be ~0;
- faces without occluders: the share on which the guard fired (occluded share > 1% of the face ellipse) and the
  share of face-box pixels it changed.

Paired 95% bootstrap intervals (faces resampled) of guard on - off.

(b) Real photos, no ground truth: ../shared/data/realworld/codeformer/masked_faces (5 aligned 512 faces with
white strokes over them, restored like (a)) and the whole photos of ../shared/data/realworld/*/whole_imgs
(detector auto); per face the gate's weight and the guard's occluded share. The sheet shows input | without the
guard | with the guard | the guard's mask (red) for the masked faces and for the whole-photo faces where the guard
kept most.

    python benchmarks/occlusion_guard.py                          # 50 held-out faces + real photos, ~12 min
    python benchmarks/occlusion_guard.py --split tune             # the 50 faces the defaults were chosen on
    python benchmarks/occlusion_guard.py --faces 4 --no-real      # a smoke run

Writes benchmarks/results/occlusion_guard.json (every image, the summary) and .md, and
docs/occlusion_guard_sheet.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
S = 512
METHOD = "ispl"
TASK = "realworld-gfpgan"
KINDS = ("hand", "microphone", "glasses", "sunglasses", "patch")
SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.57, 0.42], [0.62, 0.42, 0.30],
                       [0.45, 0.30, 0.21], [0.30, 0.20, 0.15]])
BOX = (144, 464, 96, 416)  # y0, y1, x0, x1: the quality gate's face box at 512
MARGIN = 24  # px at 512: the occluder is grown by this before measuring "outside"
FIRED = 0.01  # occluded share over which the guard counts as having fired
CHANGED = 2 / 255


# --------------------------------------------------------------------------------------------------
# synthetic occluders: (colour (S, S, 3), alpha (S, S)) on the FFHQ template at 512


def _soft(mask: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0, 1)


def hand(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.zeros((S, S), np.float32)
    lines = np.zeros((S, S), np.float32)
    side = rng.choice([-1, 1])
    cx = 256 + side * rng.uniform(40, 120)
    base_y = rng.uniform(470, 540)
    ang0 = rng.uniform(-25, 25) - side * 15
    cv2.ellipse(alpha, (int(cx), int(base_y)), (int(rng.uniform(75, 95)), int(rng.uniform(90, 120))), ang0, 0, 360,
                1.0, -1, cv2.LINE_AA)
    reach = rng.uniform(150, 230)
    for k in range(4):
        off = (k - 1.5) * rng.uniform(30, 38)
        a = np.deg2rad(ang0 + (k - 1.5) * 4)
        fx, fy = cx + off * np.cos(a), base_y - 40 + off * np.sin(a)
        length = reach * (0.8 + 0.2 * (1 - abs(k - 1.5) / 1.5))
        mx, my = fx + 0.5 * length * np.sin(a), fy - 0.5 * length * np.cos(a)
        one = np.zeros_like(alpha)
        cv2.ellipse(one, (int(mx), int(my)), (int(rng.uniform(14, 18)), int(length / 2)), np.rad2deg(a), 0, 360,
                    1.0, -1, cv2.LINE_AA)
        lines = np.maximum(lines, cv2.morphologyEx(one, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)))
        alpha = np.maximum(alpha, one)
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.08, 3)
    yy = np.mgrid[0:S, 0:S][0] / S
    col = np.clip(tone[None, None, :] * (0.85 + 0.3 * (1 - yy))[:, :, None], 0, 1)  # lit from above
    col = col * (1 - 0.45 * _soft(lines, 1.0)[:, :, None]) + rng.normal(0, 0.015, col.shape)
    return np.clip(col, 0, 1).astype(np.float32), _soft(alpha)


def microphone(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.zeros((S, S), np.float32)
    cx, cy, r = rng.uniform(200, 312), rng.uniform(380, 430), rng.uniform(55, 80)
    cv2.circle(alpha, (int(cx), int(cy)), int(r), 1.0, -1, cv2.LINE_AA)
    ang = np.deg2rad(rng.uniform(-20, 20))
    cv2.line(alpha, (int(cx), int(cy)), (int(cx + 400 * np.sin(ang)), int(cy + 400 * np.cos(ang))), 1.0,
             int(rng.uniform(34, 46)), cv2.LINE_AA)
    col = np.full((S, S, 3), rng.uniform(0.04, 0.22), np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    yy, xx = np.mgrid[0:S, 0:S]
    col[((xx % 9 < 2) | (yy % 9 < 2)) & ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)] *= 1.8  # the grille
    col += 0.25 * np.exp(-(((xx - cx + 0.4 * r) ** 2 + (yy - cy + 0.4 * r) ** 2) / (0.25 * r) ** 2))[:, :, None]
    return np.clip(col, 0, 1).astype(np.float32), _soft(alpha)


def glasses(rng: np.random.Generator, filled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.zeros((S, S), np.float32)
    t = int(rng.uniform(5, 10))
    ex = [193 + rng.uniform(-4, 4), 319 + rng.uniform(-4, 4)]
    ey = 240 + rng.uniform(-6, 6)
    ax, ay = int(rng.uniform(48, 58)), int(rng.uniform(32, 42))
    for x in ex:
        cv2.ellipse(alpha, (int(x), int(ey)), (ax, ay), 0, 0, 360, 1.0, -1 if filled else t, cv2.LINE_AA)
    cv2.line(alpha, (int(ex[0] + ax), int(ey - 8)), (int(ex[1] - ax), int(ey - 8)), 1.0, t, cv2.LINE_AA)
    cv2.line(alpha, (int(ex[0] - ax), int(ey - 6)), (40, int(ey - 14)), 1.0, t, cv2.LINE_AA)
    cv2.line(alpha, (int(ex[1] + ax), int(ey - 6)), (S - 40, int(ey - 14)), 1.0, t, cv2.LINE_AA)
    if filled:
        col = np.full((S, S, 3), rng.uniform(0.03, 0.12), np.float32)
        yy = np.mgrid[0:S, 0:S][0]
        col += (0.12 * np.clip(1 - (yy - ey + ay) / (2 * ay), 0, 1))[:, :, None]  # a reflection on top
    else:
        base = [(0.05, 0.05, 0.05), (0.25, 0.14, 0.07), (0.5, 0.1, 0.1)][rng.integers(3)]
        col = np.broadcast_to(np.array(base, np.float32), (S, S, 3)).copy()
    return np.clip(col, 0, 1).astype(np.float32), _soft(alpha, 0.8)


def patch(rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, h = int(rng.uniform(120, 190)), int(rng.uniform(110, 170))
    x0 = 0 if rng.random() < 0.5 else S - w
    src = donor[0:h, x0 : x0 + w]  # a top corner of an FFHQ-aligned face: hair or background
    if rng.random() < 0.5:
        src = src[:, ::-1]
    cx, cy = rng.uniform(150, 362), rng.uniform(200, 400)
    X0, Y0 = int(cx - w / 2), int(cy - h / 2)
    col = np.zeros((S, S, 3), np.float32)
    ys, xs = slice(max(Y0, 0), min(Y0 + h, S)), slice(max(X0, 0), min(X0 + w, S))
    col[ys, xs] = src[ys.start - Y0 : ys.stop - Y0, xs.start - X0 : xs.stop - X0]
    alpha = np.zeros((S, S), np.float32)
    cv2.ellipse(alpha, (int(cx), int(cy)), (w // 2 - 4, h // 2 - 4), rng.uniform(0, 180), 0, 360, 1.0, -1,
                cv2.LINE_AA)
    return col, _soft(alpha)


def occlude(face: np.ndarray, kind: str, rng: np.random.Generator,
            donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the face with the occluder drawn over it, the occluder's alpha (S, S) in [0, 1])."""
    col, a = {"hand": lambda: hand(rng), "microphone": lambda: microphone(rng), "glasses": lambda: glasses(rng),
              "sunglasses": lambda: glasses(rng, filled=True), "patch": lambda: patch(rng, donor)}[kind]()
    return (a[:, :, None] * col + (1 - a[:, :, None]) * face).astype(np.float32), a


# --------------------------------------------------------------------------------------------------
# running the pipeline with and without the guard


class Replay:
    """PasteShares that pastes each face at a weight already decided (the guarded run's), without running the
    gate again: the two runs differ by the guard only."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = weights

    def needs_gate(self, index: int) -> bool:
        return False

    def share(self, index: int, decision) -> float:
        return self.weights[index]


def run_both(rgb: np.ndarray, restorer, detections=None) -> tuple:
    """(result with the guard, result without it) of the default pipeline at scale 1."""
    from facerestore.faces.detect import FaceDetection
    from facerestore.pipeline import restore_photo

    on = restore_photo(rgb, restorer, upscale=1, detections=detections, detector="fixed" if detections else "auto")
    dets = [FaceDetection(box=f.box, score=f.score, landmarks5=f.landmarks5, landmarks68=f.landmarks68)
            for f in on.faces]
    off = restore_photo(rgb, restorer, upscale=1, detections=dets, detector="fixed", identity=False,
                        occlusion_guard=False, shares=Replay([f.paste_weight for f in on.faces]))
    return on, off


def template_detection():
    from facerestore.faces.align import template
    from facerestore.faces.detect import FaceDetection

    return [FaceDetection(box=np.array([96.0, 112.0, 416.0, 480.0]), score=1.0, landmarks5=template(S))]


# --------------------------------------------------------------------------------------------------
# measures


def psnr(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    mse = float(((a - b) ** 2)[m].mean())
    return 10 * np.log10(1.0 / max(mse, 1e-10))


def de_low(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    from facerestore.faces.paste import rgb_to_lab

    s = S / 32
    la = rgb_to_lab(np.clip(cv2.GaussianBlur(a, (0, 0), s), 0, 1))
    lb = rgb_to_lab(np.clip(cv2.GaussianBlur(b, (0, 0), s), 0, 1))
    return float(np.sqrt(((la - lb) ** 2).sum(-1))[m].mean())


def box_mask() -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[BOX[0] : BOX[1], BOX[2] : BOX[3]] = True
    return m


def measure(clean: np.ndarray, alpha: np.ndarray, images: dict[str, np.ndarray]) -> dict[str, float]:
    box = box_mask()
    inside = (alpha > 0.5) & box
    outside = box & ~cv2.dilate((alpha > 0.02).astype(np.uint8), np.ones((2 * MARGIN + 1,) * 2, np.uint8)).astype(bool)
    out: dict[str, float] = {"in_px": int(inside.sum()), "out_px": int(outside.sum())}
    for name, img in images.items():
        if inside.sum() >= 100:
            out[f"in_psnr_{name}"] = psnr(img, clean, inside)
            out[f"in_de_{name}"] = de_low(img, clean, inside)
        out[f"out_psnr_{name}"] = psnr(img, clean, outside)
    diff = np.abs(images["on"] - images["off"]).max(2)
    out["out_change_x255"] = float(diff[outside].mean() * 255)
    out["out_changed_share"] = float((diff[outside] > CHANGED).mean())
    out["box_changed_share"] = float((diff[box] > CHANGED).mean())
    return out


def load_faces(split: str, n: int) -> tuple[list[str], list[np.ndarray]]:
    from facerestore.io import read_image

    files = sorted(p for p in (DATA / "ffhq256").glob("*.*") if p.stem[-1:] == "0")
    if not files:
        sys.exit(f"no faces: {DATA / 'ffhq256'} is missing")
    half = len(files) // 2
    chosen = files[:half] if split == "tune" else files[half:]
    imgs = [np.clip(cv2.resize(read_image(f).rgb, (S, S), interpolation=cv2.INTER_CUBIC), 0, 1) for f in files]
    by_name = {f.name: im for f, im in zip(files, imgs)}
    names = [f.name for f in chosen[:n]]
    return names, [by_name[nm] for nm in names] + [imgs[(files.index(f) + 37) % len(files)] for f in chosen[:n]]


def degrade_face(img: np.ndarray, seed: int) -> np.ndarray:
    from facerestore import degrade

    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    return degrade.apply(x, TASK, generator=seed)[0][0].clamp(0, 1).permute(1, 2, 0).numpy().copy()


# --------------------------------------------------------------------------------------------------
# summary and report


def bootstrap(d: list[float]) -> list[float]:
    from facerestore.metrics.stats import paired_bootstrap

    return [round(v, 3) for v in paired_bootstrap(np.array(d, np.float64))]


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for kind in (*KINDS, "all occluders"):
        rs = [r for r in rows if r["kind"] != "none" and (kind == "all occluders" or r["kind"] == kind)]
        rs_in = [r for r in rs if "in_psnr_on" in r]
        if not rs:
            continue
        pasted = [r for r in rs_in if r["paste_weight"] > 0]
        e = {
            "images": len(rs), "pasted": sum(r["paste_weight"] > 0 for r in rs),
            "guard_fired": sum(r["occluded_share"] is not None and r["occluded_share"] > FIRED for r in rs),
            "mean_occluded_share": float(np.mean([r["occluded_share"] or 0.0 for r in rs])),
        }
        for group, g in (("all", rs_in), ("pasted", pasted)):
            if not g:
                continue
            for m in ("in_psnr", "in_de", "out_psnr"):
                for row in ("input", "off", "on"):
                    e[f"{group}_{m}_{row}"] = float(np.mean([r[f"{m}_{row}"] for r in g]))
                e[f"{group}_{m}_on_minus_off"] = bootstrap([r[f"{m}_on"] - r[f"{m}_off"] for r in g])
            e[f"{group}_out_change_x255"] = float(np.mean([r["out_change_x255"] for r in g]))
            e[f"{group}_out_changed_share"] = float(np.mean([r["out_changed_share"] for r in g]))
        out[kind] = e
    clean = [r for r in rows if r["kind"] == "none"]
    if clean:
        pasted = [r for r in clean if r["paste_weight"] > 0]
        out["no occluder"] = {
            "images": len(clean), "pasted": len(pasted),
            "guard_fired": sum((r["occluded_share"] or 0.0) > FIRED for r in clean),
            "guard_fired_share_of_pasted": (sum((r["occluded_share"] or 0.0) > FIRED for r in pasted) / len(pasted)
                                            if pasted else None),
            "mean_occluded_share": float(np.mean([r["occluded_share"] or 0.0 for r in clean])),
            "max_occluded_share": float(max(r["occluded_share"] or 0.0 for r in clean)),
            "mean_box_changed_share": float(np.mean([r["box_changed_share"] for r in clean])),
        }
    return out


def to_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Occlusion guard (issue 15 item 4)",
        "",
        f"`{result['command']}` ({result['seconds']:.0f} s, {result['machine']}). Faces: {result['faces']} ffhq256 "
        f"validation faces, split `{result['split']}` ({result['split_note']}), 512 px, each clean and with two "
        f"synthetic occluders, degraded by `{TASK}`, restored by the default pipeline (`{METHOD}`, quality gate, "
        "identity, mesh paste-back) with the occlusion guard on and off (the off run replays the gate's weights).",
        "",
        "Inside the occluder (face box of the template): PSNR to the clean occluded face (dB) and low-pass ΔE (CIE "
        "Lab, Gaussian 1/32 of the side); outside it (grown by 24 px): PSNR and the guard's change. `on - off`: "
        "mean and paired 95% bootstrap interval over images.",
        "",
        "| occluder | images | pasted by the gate | guard fired | PSNR in: input / off / on | on - off | "
        "ΔE low in: input / off / on | PSNR out: off / on | change out (x255) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in (*KINDS, "all occluders"):
        if kind not in s:
            continue
        e = s[kind]
        if "all_in_psnr_on" not in e:
            continue
        d = e["all_in_psnr_on_minus_off"]
        lines.append(
            f"| {kind} | {e['images']} | {e['pasted']} | {e['guard_fired']} | {e['all_in_psnr_input']:.2f} / "
            f"{e['all_in_psnr_off']:.2f} / {e['all_in_psnr_on']:.2f} | {d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] | "
            f"{e['all_in_de_input']:.2f} / {e['all_in_de_off']:.2f} / {e['all_in_de_on']:.2f} | "
            f"{e['all_out_psnr_off']:.2f} / {e['all_out_psnr_on']:.2f} | {e['all_out_change_x255']:.3f} |")
    if "no occluder" in s:
        e = s["no occluder"]
        lines += ["", f"Faces without occluders: {e['images']}, pasted by the gate {e['pasted']}; the guard fired "
                  f"(occluded share > {FIRED:.0%}) on **{e['guard_fired']}** (mean occluded share "
                  f"{e['mean_occluded_share']:.4f}, max {e['max_occluded_share']:.3f}; face-box pixels changed by "
                  f"> 2/255: {e['mean_box_changed_share']:.4f})."]
    if result.get("real"):
        lines += ["", "Real photos (no ground truth): gate weight and occluded share per face.", "",
                  "| photo | face | gate weight | occluded share |", "|---|---|---|---|"]
        for r in result["real"]:
            share = "-" if r["occluded_share"] is None else f"{r['occluded_share']:.3f}"
            lines.append(f"| {r['photo']} | {r['face']} | {r['paste_weight']:.2f} | {share} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# the sheet


def _overlay(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    out = img.copy()
    if mask is not None:
        m = np.clip(mask, 0, 1)[:, :, None]
        out = out * (1 - 0.55 * m) + 0.55 * m * np.array([1.0, 0.1, 0.1], np.float32)
    return out


def face_window(res, face) -> tuple[slice, slice]:
    h, w = res.image.shape[:2]
    x0, y0, x1, y1 = face.box
    c, half = ((x0 + x1) / 2, (y0 + y1) / 2), 0.8 * max(x1 - x0, y1 - y0)
    X0, Y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    X1, Y1 = int(min(w, c[0] + half)), int(min(h, c[1] + half))
    return slice(Y0, Y1), slice(X0, X1)


def mask_in_photo(res, face) -> np.ndarray | None:
    if face.occlusion is None:
        return None
    from facerestore.occlusion import keep_background

    h, w = res.image.shape[:2]
    canvas = np.zeros((h, w, 3), np.float32)
    inv = cv2.invertAffineTransform(np.asarray(face.affine, np.float64))
    keep_background(canvas, np.ones_like(canvas), face.occlusion, inv, (h, w))
    return canvas[..., 0]


def write_sheet(path: Path, rows: list[tuple[str, list[np.ndarray]]], tile: int = 224) -> None:
    gap = 6
    head = 26
    cols = ["input", "guard off", "guard on", "guard mask"]
    width = len(cols) * tile + (len(cols) - 1) * gap
    lines = [np.full((head, width, 3), 255, np.uint8)]
    for k, c in enumerate(cols):
        cv2.putText(lines[0], c, (k * (tile + gap) + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for name, imgs in rows:
        tiles = []
        for im in imgs:
            t = cv2.resize(np.clip(im, 0, 1), (tile, tile), interpolation=cv2.INTER_AREA)
            tiles += [(t * 255 + 0.5).astype(np.uint8), np.full((tile, gap, 3), 255, np.uint8)]
        line = np.concatenate(tiles[:-1], axis=1)
        cv2.putText(line, name, (5, tile - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        lines += [line, np.full((gap, width, 3), 255, np.uint8)]
    sheet = np.concatenate(lines[:-1], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# --------------------------------------------------------------------------------------------------


def synthetic(args, restorer) -> tuple[list[dict], list[tuple[str, list[np.ndarray]]]]:
    names, imgs = load_faces(args.split, args.faces)
    faces, donors = imgs[: len(names)], imgs[len(names):]
    det = template_detection()
    rows, examples = [], []
    t0 = time.time()
    for i, (name, face) in enumerate(zip(names, faces)):
        seed = int(Path(name).stem)
        variants = [("none", face, np.zeros((S, S), np.float32))]
        for j in range(2):
            kind = KINDS[(2 * i + j) % len(KINDS)]
            occ, a = occlude(face, kind, np.random.default_rng(10 * seed + j), donors[i])
            variants.append((kind, occ, a))
        for kind, clean, alpha in variants:
            lq = degrade_face(clean, seed)
            on, off = run_both(lq, restorer, det)
            f = on.faces[0]
            r = {"face": name, "kind": kind, "paste_weight": round(f.paste_weight, 4),
                 "gate": None if f.gate is None else f.gate.reason, "occluded_share": f.occluded_share,
                 **measure(clean, alpha, {"input": lq, "off": off.image, "on": on.image})}
            rows.append(r)
            if kind != "none" and f.occluded_share and f.paste_weight > 0:
                examples.append((f.occluded_share, f"{name[:-4]} {kind}",
                                 [lq, off.image, on.image, _overlay(on.image, f.occlusion)]))
        print(f"[{i + 1}/{len(names)}] {name}: {time.time() - t0:.0f} s", file=sys.stderr)
    examples.sort(key=lambda e: -e[0])
    return rows, [(n, ims) for _, n, ims in examples]


def real(restorer) -> tuple[list[dict], list[tuple[str, list[np.ndarray]]], list[tuple[float, str, list]]]:
    from facerestore.io import read_image

    rows, masked_rows, photo_rows = [], [], []
    for f in sorted((DATA / "realworld" / "codeformer" / "masked_faces").glob("*.*")):
        rgb = read_image(f).rgb
        on, off = run_both(rgb, restorer, template_detection())
        face = on.faces[0]
        name = str(f.relative_to(DATA))
        rows.append({"photo": name, "face": 0, "paste_weight": face.paste_weight,
                     "gate": None if face.gate is None else face.gate.reason, "occluded_share": face.occluded_share})
        masked_rows.append((f"masked {f.stem} w {face.paste_weight:.2f} occ {face.occluded_share or 0:.2f}",
                            [rgb, off.image, on.image, _overlay(on.image, face.occlusion)]))
    photos = sorted((DATA / "realworld").glob("*/whole_imgs/*"))
    for f in photos:
        if f.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
            continue
        rgb = read_image(f).rgb
        on, off = run_both(rgb, restorer)
        name = str(f.relative_to(DATA))
        for k, face in enumerate(on.faces):
            rows.append({"photo": name, "face": k, "paste_weight": face.paste_weight,
                         "gate": None if face.gate is None else face.gate.reason,
                         "occluded_share": face.occluded_share})
            if face.paste_weight > 0:
                ys, xs = face_window(on, face)
                m = mask_in_photo(on, face)
                photo_rows.append(((face.occluded_share or 0.0) * face.paste_weight,
                                   f"{f.parent.parent.name}/{f.name} #{k} w {face.paste_weight:.2f} "
                                   f"occ {face.occluded_share or 0:.2f}",
                                   [rgb[ys, xs], off.image[ys, xs], on.image[ys, xs],
                                    _overlay(on.image[ys, xs], None if m is None else m[ys, xs])]))
        print(f"real: {name}: {len(on.faces)} faces", file=sys.stderr)
    photo_rows.sort(key=lambda e: -e[0])
    return rows, masked_rows, photo_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("test", "tune"), default="test",
                    help="test: validation faces 00550-01090 (held out from the guard's calibration); "
                    "tune: 00000-00540")
    ap.add_argument("--faces", type=int, default=50, help="faces of the split (each clean + two occluders)")
    ap.add_argument("--no-real", action="store_true", help="skip the real photos (b)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "occlusion_guard.json"))
    ap.add_argument("--sheet", default=str(ROOT / "docs" / "occlusion_guard_sheet.png"))
    ap.add_argument("--sheet-photos", type=int, default=3, help="whole-photo faces on the sheet (largest share)")
    ap.add_argument("--sheet-synthetic", type=int, default=2, help="synthetic examples on the sheet")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from facerestore.pipeline import get_restorer

    restorer = get_restorer(METHOD)
    restorer.progress = False
    t0 = time.time()
    rows, examples = synthetic(args, restorer)
    real_rows, masked_rows, photo_rows = ([], [], []) if args.no_real else real(restorer)
    result = {
        "benchmark": "occlusion_guard",
        "command": "python benchmarks/occlusion_guard.py " + " ".join(sys.argv[1:]),
        "method": METHOD, "task": TASK, "split": args.split,
        "split_note": "held out from the guard's calibration" if args.split == "test" else
                      "the faces the guard's defaults were chosen on",
        "faces": len({r["face"] for r in rows}),
        "fired_if_occluded_share_over": FIRED,
        "summary": summarise(rows),
        "images": rows,
        "real": real_rows,
        "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    sheet = masked_rows + [(n, ims) for _, n, ims in photo_rows[: args.sheet_photos]] + examples[: args.sheet_synthetic]
    if args.sheet and sheet:
        write_sheet(Path(args.sheet), sheet)
        print(f"sheet: {args.sheet} (input | guard off | guard on | guard mask)", file=sys.stderr)


if __name__ == "__main__":
    main()
