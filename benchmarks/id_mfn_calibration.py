"""Calibrate the independent identity metrics on ../shared/data/photos: ``id_mobileface`` (MobileFace cosine
distance) and ``id_mfn`` (MobileFaceNet cosine distance).

Pairs: master.csv and face-recognition-pivot.csv (same / different person), merged and de-duplicated
(unordered pairs). Faces: the largest dlib HOG face of each photo, with 68 landmarks reduced to 5 points,
warped onto ArcFace's 112 px template (facerestore.faces.identity.mobilefacenet_crop). Reports, per network,
the ROC AUC (same-person pairs should have the smaller distance) and the equal-error-rate threshold, both
CHOSEN ON THIS DATA (no held-out split: 61 photos are too few), and dlib's FED AUC on the same faces for
comparison.

The licences of MobileFace and MobileFaceNet are not stated: evaluation use only.

    python benchmarks/id_mfn_calibration.py            # writes benchmarks/results/id_mfn_calibration.json
"""

from __future__ import annotations

import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
TABLES = ("master.csv", "face-recognition-pivot.csv")


def read_pairs(folder: Path) -> dict[tuple[str, str], bool]:
    pairs: dict[tuple[str, str], bool] = {}
    for table in TABLES:
        with open(folder / table, newline="") as f:
            for r in csv.DictReader(f):
                a, b = sorted((Path(r["file_x"]).name, Path(r["file_y"]).name))
                same = (r.get("Decision") or r.get("decision")) == "Yes"
                if pairs.get((a, b), same) != same:
                    raise SystemExit(f"conflicting labels for {a} / {b}")
                pairs[(a, b)] = same
    return pairs


def eer_threshold(d_same: np.ndarray, d_diff: np.ndarray) -> tuple[float, float, float]:
    """(threshold, false reject rate, false accept rate) at the equal error rate, "same" meaning d < threshold;
    the threshold lies midway between two consecutive observed distances."""
    cands = np.unique(np.concatenate([d_same, d_diff]))
    mids = np.concatenate([[cands[0] - 1e-6], (cands[1:] + cands[:-1]) / 2, [cands[-1] + 1e-6]])
    frr = (d_same[None, :] >= mids[:, None]).mean(1)
    far = (d_diff[None, :] < mids[:, None]).mean(1)
    i = int(np.argmin(np.abs(frr - far) + 1e-9 * (frr + far)))
    return float(mids[i]), float(frr[i]), float(far[i])


def main() -> int:
    from facerestore.faces.detect import DlibDetector, landmarks_68_to_5, select_faces
    from facerestore.faces.identity import (
        MobileFaceEmbedder,
        MobileFaceNetEmbedder,
        dlib_embedding,
        embedding_distance,
        mfn_distance,
        mobilefacenet_crop,
    )
    from facerestore.io import read_rgb
    from facerestore.metrics.stats import roc_auc

    if not PHOTOS.is_dir():
        raise SystemExit(f"needs ../shared/data/photos (not found at {PHOTOS})")
    t0 = time.time()
    pairs = read_pairs(PHOTOS)
    names = sorted({n for p in pairs for n in p})
    det = DlibDetector("hog", upsample=0, max_side=640, landmarks=68)
    mfn, mface = MobileFaceNetEmbedder(), MobileFaceEmbedder()
    emb_mfn, emb_mface, emb_dlib, missing = {}, {}, {}, []
    crops_mfn: dict[str, np.ndarray] = {}
    for n in names:
        if not (PHOTOS / n).is_file():
            missing.append(n)
            continue
        img = read_rgb(PHOTOS / n)
        faces = select_faces(det.detect(img), "largest", img.shape)
        if not faces:
            missing.append(n)
            continue
        f = faces[0]
        lm5 = f.landmarks5 if f.landmarks68 is None else landmarks_68_to_5(f.landmarks68)
        crop = mobilefacenet_crop(img, lm5)[None]
        crops_mfn[n] = crop[0]
        emb_mfn[n] = mfn.embed_crops(crop)[0]
        emb_mface[n] = mface.embed_crops(crop)[0]
        u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        emb_dlib[n] = dlib_embedding(u8, f.box)
    used = [(a, b, s) for (a, b), s in sorted(pairs.items()) if a in emb_mfn and b in emb_mfn]
    same = np.array([s for _, _, s in used])
    d_mfn = np.array([mfn_distance(emb_mfn[a], emb_mfn[b]) for a, b, _ in used])
    d_mface = np.array([mfn_distance(emb_mface[a], emb_mface[b]) for a, b, _ in used])
    thr_f, frr_f, far_f = eer_threshold(d_mface[same], d_mface[~same])
    d_dlib = np.array([embedding_distance(emb_dlib[a], emb_dlib[b]) for a, b, _ in used])
    thr, frr, far = eer_threshold(d_mfn[same], d_mfn[~same])
    per_table = {}
    for table in TABLES:
        rows = read_pairs_table(PHOTOS / table)
        keep = [(a, b, s) for a, b, s in rows if a in emb_mfn and b in emb_mfn]
        dm = np.array([mfn_distance(emb_mfn[a], emb_mfn[b]) for a, b, _ in keep])
        df = np.array([mfn_distance(emb_mface[a], emb_mface[b]) for a, b, _ in keep])
        dd = np.array([embedding_distance(emb_dlib[a], emb_dlib[b]) for a, b, _ in keep])
        ss = np.array([s for _, _, s in keep])
        per_table[table] = {"same": int(ss.sum()), "different": int((~ss).sum()),
                            "auc_id_mfn": roc_auc(-dm[ss], -dm[~ss]),
                            "auc_id_mobileface": roc_auc(-df[ss], -df[~ss]), "auc_dlib_fed": roc_auc(-dd[ss], -dd[~ss])}
    result = {
        "command": "python benchmarks/id_mfn_calibration.py",
        "machine": platform.platform(),
        "photos": len(names), "photos_without_face": missing,
        "pairs": len(used), "same": int(same.sum()), "different": int((~same).sum()),
        "id_mobileface": {"auc": roc_auc(-d_mface[same], -d_mface[~same]), "eer_threshold": thr_f,
                          "frr_at_threshold": frr_f, "far_at_threshold": far_f,
                          "same_mean": float(d_mface[same].mean()), "different_mean": float(d_mface[~same].mean())},
        "id_mfn": {"auc": roc_auc(-d_mfn[same], -d_mfn[~same]), "eer_threshold": thr, "frr_at_threshold": frr,
                   "far_at_threshold": far,
                   "same_mean": float(d_mfn[same].mean()), "different_mean": float(d_mfn[~same].mean())},
        "dlib_fed": {"auc": roc_auc(-d_dlib[same], -d_dlib[~same]),
                     "eer_threshold": eer_threshold(d_dlib[same], d_dlib[~same])[0]},
        "per_table": per_table,
        "id_mfn_input_conventions": mfn_conventions(mfn, crops_mfn, used, same),
        "note": "thresholds and AUCs chosen/measured on the same pairs (no held-out split); MobileFace and "
                "MobileFaceNet: evaluation use only (licences not stated)",
        "seconds": round(time.time() - t0, 1),
    }
    out = ROOT / "benchmarks" / "results" / "id_mfn_calibration.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def mfn_conventions(mfn, crops: dict[str, np.ndarray], used, same: np.ndarray) -> dict[str, float]:
    """ROC AUC of MobileFaceNet's distance under other input conventions than its own ((x - 127.5) / 128 on RGB
    0-255): is its weak separation our preprocessing? (Its port equals TensorFlow.js on the same files:
    tests/nn/test_tfjs.py.)"""
    import torch

    from facerestore.faces.identity import mfn_distance
    from facerestore.metrics.stats import roc_auc

    names = list(crops)
    x = np.stack([crops[n] for n in names]).astype(np.float32)  # (N, 112, 112, 3) RGB in [0, 1]
    idx = {n: i for i, n in enumerate(names)}
    conventions = {"rgb (x-127.5)/128 (its own)": (x * 255 - 127.5) / 128,
                   "bgr (x-127.5)/128": (x[..., ::-1] * 255 - 127.5) / 128, "rgb [0, 1]": x,
                   "bgr [0, 1]": x[..., ::-1], "rgb 0-255": x * 255, "bgr 0-255": x[..., ::-1] * 255}
    out = {}
    for name, arr in conventions.items():
        with torch.no_grad():
            e = mfn.net(torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).to(mfn.device)).cpu().double()
        e = e.numpy()
        d = np.array([mfn_distance(e[idx[a]], e[idx[b]]) for a, b, _ in used])
        out[name] = roc_auc(-d[same], -d[~same])
    return out


def read_pairs_table(path: Path) -> list[tuple[str, str, bool]]:
    with open(path, newline="") as f:
        return [(*sorted((Path(r["file_x"]).name, Path(r["file_y"]).name)),
                 (r.get("Decision") or r.get("decision")) == "Yes") for r in csv.DictReader(f)]


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()  # --help; no options
    sys.exit(main())
