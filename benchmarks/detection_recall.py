"""Face detection recall and false positives on every whole photo of ../shared/data, detectors side by side.

Photos: ``realworld/*/whole_imgs/*`` and ``photos/*`` (74 images). Ground truth: ``benchmarks/data/visible_faces.json``,
the eye positions of every visible face, made by hand (the file says how). Each detector runs on the copy of
the photo the pipeline detects on (``facerestore.pipeline.DETECT_MAX_PIXELS``: at most 4 MP), at a low
threshold once; recall and false positives are then counted at the detector's calibrated default threshold
(``facerestore.faces.detect.DEFAULT_SCORE_THRESHOLDS``) and, for dlib HOG, also at the old pipeline default 0.3.

A detection finds a face when both of its eyes lie inside the box and the box is 1 to 8 eye distances wide
(one detection per face, highest score first); a detection that finds no face, and is not on a face marked
``ignore`` (faces in pictures on a wall, unsure cases), is a false positive. Time per megapixel is the detector
alone (no landmark predictor for dlib) divided by the megapixels it saw; this machine is shared, so read the
load average in the JSON.

    python benchmarks/detection_recall.py                  # benchmark -> benchmarks/results/detection_recall.json
    python benchmarks/detection_recall.py --calibrate      # thresholds from wild/ crops
    python benchmarks/detection_recall.py --overlays DIR   # candidate boxes drawn on each photo (to annotate by eye)

dlib CNN runs at upsample 0 on a copy of at most 1 MP (its default upsample 1 takes ~100 s per megapixel on
this CPU, upsample 0 ~10 s); dlib HOG at its default upsample 1; RetinaFace at input scale 1; SCRFD-2.5G
(optional, research-only weights: ``facerestore models download scrfd-2.5g``) as its detector runs by default,
on InsightFace's 640 x 640 letterbox ("scrfd"), and at the copy's own resolution ("scrfd-native", as RetinaFace).

``--detectors A,B`` runs only those and replaces only their rows in an existing output file (each row keeps
the command and load average it was measured with), so one detector can be added without re-running the slow
ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GT_FILE = REPO / "benchmarks" / "data" / "visible_faces.json"
OUT = REPO / "benchmarks" / "results" / "detection_recall.json"
CAL_OUT = REPO / "benchmarks" / "results" / "detection_calibration.json"
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DETECTORS = ("retinaface", "dlib-hog", "dlib-cnn", "scrfd", "scrfd-native")
# thresholds of the single low-threshold run (every default threshold lies above them)
LOW = {"retinaface": 0.05, "dlib-hog": -1.0, "dlib-cnn": 0.0, "scrfd": 0.05, "scrfd-native": 0.05}
MIN_EYE_DIST = 24.0
# dlib CNN at ~10 s per megapixel on this CPU: on a copy of at most 1 MP (the others see the pipeline's 4 MP copy)
MAX_PIXELS = {"dlib-cnn": 1_000_000}


def photos(data: Path) -> list[Path]:
    files = sorted(p for p in data.glob("realworld/*/whole_imgs/*") if p.suffix.lower() in IMAGE_EXT)
    return files + sorted(p for p in (data / "photos").iterdir() if p.suffix.lower() in IMAGE_EXT)


def load_uint8(path: Path) -> np.ndarray:
    from facerestore.faces.detect import as_uint8_rgb
    from facerestore.io import read_rgb

    return as_uint8_rgb(read_rgb(path))


def pipeline_copy(rgb: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, float]:
    """The copy the pipeline detects on (or one of at most ``max_pixels``) and the factor back to the photo's
    pixels."""
    import cv2

    from facerestore.pipeline import DETECT_MAX_PIXELS

    max_pixels = max_pixels or DETECT_MAX_PIXELS
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, 1.0
    s = float(np.sqrt(max_pixels / (h * w)))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), w / size[0]


def make_detector(name: str, threshold: float):
    from facerestore.faces.detect import DlibDetector, RetinaFaceDetector, SCRFDDetector

    if name == "retinaface":
        return RetinaFaceDetector(threshold=threshold)
    if name.startswith("scrfd"):
        return SCRFDDetector(threshold=threshold, size=None if name == "scrfd-native" else 640)
    if name == "dlib-hog":
        return DlibDetector("hog", upsample=1, threshold=threshold)
    return DlibDetector("cnn", upsample=0, threshold=threshold)


def raw_detections(det, name: str, img: np.ndarray) -> tuple[list[list[float]], list[float], float]:
    """Boxes, scores and seconds of one detector on one image (dlib: detector only, no landmarks)."""
    t = time.perf_counter()
    if name == "retinaface" or name.startswith("scrfd"):
        dets = det.detect(img)
        pairs = [(d.box, d.score) for d in dets]
    else:
        pairs = det.boxes(img)
    sec = time.perf_counter() - t
    return [[float(v) for v in b] for b, _ in pairs], [float(s) for _, s in pairs], sec


# --- matching -------------------------------------------------------------------------------------------------


def match(faces: list[dict], boxes: list[list[float]], scores: list[float], thr: float) -> dict:
    """Greedy matching (highest score first) of detections to ground-truth faces by eye containment."""
    order = sorted((i for i, s in enumerate(scores) if s >= thr), key=lambda i: -scores[i])
    found = [False] * len(faces)
    fp = 0
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        hit, on_ignored = None, False
        for k, f in enumerate(faces):
            (ax, ay), (bx, by) = f["eyes"]
            d = float(np.hypot(bx - ax, by - ay))
            inside = all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in f["eyes"])
            if not (inside and d * 1.0 <= (x1 - x0) <= d * 8.0):
                continue
            if f.get("ignore"):
                on_ignored = True
                continue
            if not found[k]:
                hit = k
                break
            on_ignored = True  # a second box on a face already found: a duplicate, counted apart
        if hit is not None:
            found[hit] = True
        elif not on_ignored:
            fp += 1
    return {"found": found, "false_positives": fp}


def eye_dist(f: dict) -> float:
    (ax, ay), (bx, by) = f["eyes"]
    return float(np.hypot(bx - ax, by - ay))


def evaluate(gt: dict, raw: dict, thresholds: dict[str, float]) -> dict:
    out = {}
    for name, thr in thresholds.items():
        det_name = name.split("@")[0]
        n_all = n_big = f_all = f_big = fp = 0
        missed_big, per_photo = [], {}
        ran = [p for p in gt["photos"] if det_name in raw.get(p, {})]
        for photo in ran:
            faces = gt["photos"][photo]["faces"]
            r = raw[photo][det_name]
            m = match(faces, r["boxes"], r["scores"], thr)
            fp += m["false_positives"]
            per_photo[photo] = {"found": int(sum(m["found"])), "faces": sum(not f.get("ignore") for f in faces),
                                "false_positives": m["false_positives"]}
            for f, ok in zip(faces, m["found"]):
                if f.get("ignore"):
                    continue
                n_all += 1
                f_all += ok
                if eye_dist(f) >= MIN_EYE_DIST:
                    n_big += 1
                    f_big += ok
                    if not ok:
                        missed_big.append({"photo": photo, "eyes": f["eyes"], "eye_dist": round(eye_dist(f), 1)})
        mp = sum(raw[p][det_name]["mpix"] for p in ran)
        sec = sum(raw[p][det_name]["seconds"] for p in ran)
        out[name] = {
            "threshold": thr,
            "photos": len(ran),
            f"recall_eye_dist_ge_{int(MIN_EYE_DIST)}px": round(f_big / max(n_big, 1), 4),
            f"found_eye_dist_ge_{int(MIN_EYE_DIST)}px": f"{f_big}/{n_big}",
            "recall_all": round(f_all / max(n_all, 1), 4),
            "found_all": f"{f_all}/{n_all}",
            "false_positives": fp,
            "seconds_per_megapixel": round(sec / max(mp, 1e-9), 3),
            "missed_eye_dist_ge_24px": missed_big,
            "per_photo": per_photo,
        }
    return out


# --- runs -----------------------------------------------------------------------------------------------------


def run_raw(files: list[Path], data: Path, names: tuple[str, ...], cache: Path | None) -> dict:
    raw: dict = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    dets = {n: make_detector(n, LOW[n]) for n in names}
    for k, path in enumerate(files):
        key = str(path.relative_to(data))
        todo = [n for n in names if n not in raw.get(key, {})]
        if not todo:
            continue
        rgb = load_uint8(path)
        for n in todo:
            img, factor = pipeline_copy(rgb, MAX_PIXELS.get(n))
            boxes, scores, sec = raw_detections(dets[n], n, img)
            raw.setdefault(key, {})[n] = {
                "boxes": [[v * factor for v in b] for b in boxes], "scores": scores, "seconds": sec,
                "mpix": img.shape[0] * img.shape[1] / 1e6, "size": [rgb.shape[1], rgb.shape[0]]}
            print(f"[{k + 1}/{len(files)}] {key} {n}: {len(boxes)} boxes, {sec:.2f} s", flush=True)
        if cache:
            cache.write_text(json.dumps(raw))
    return raw


def overlays(raw: dict, data: Path, out: Path) -> None:
    """Each photo with every candidate box (green RetinaFace, red HOG, blue CNN) numbered, plus a pixel grid."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    colours = {"retinaface": (0, 255, 0), "dlib-hog": (255, 0, 0), "dlib-cnn": (0, 128, 255), "scrfd": (255, 0, 255),
               "scrfd-native": (255, 128, 0)}
    for key, per in raw.items():
        rgb = load_uint8(data / key).copy()
        h, w = rgb.shape[:2]
        lw = max(1, round(max(h, w) / 600))
        step = 100 if max(h, w) <= 1500 else 200
        for x in range(0, w, step):
            cv2.line(rgb, (x, 0), (x, h - 1), (255, 255, 0), 1)
            cv2.putText(rgb, str(x), (x + 2, 12 * lw), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * lw, (255, 255, 0), lw)
        for y in range(0, h, step):
            cv2.line(rgb, (0, y), (w - 1, y), (255, 255, 0), 1)
            cv2.putText(rgb, str(y), (2, y + 12 * lw), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * lw, (255, 255, 0), lw)
        for n, r in per.items():
            for i, (b, s) in enumerate(zip(r["boxes"], r["scores"])):
                if (n == "retinaface" or n.startswith("scrfd")) and s < 0.2:
                    continue
                p0, p1 = (round(b[0]), round(b[1])), (round(b[2]), round(b[3]))
                cv2.rectangle(rgb, p0, p1, colours[n], lw)
                cv2.putText(rgb, f"{n[0]}{i}:{s:.2f}", (p0[0], max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4 * lw, colours[n], lw)
        name = key.replace("/", "__").rsplit(".", 1)[0] + ".jpg"
        scale = min(1.0, 1600 / max(h, w))
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / name), small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])


def calibrate(data: Path, count: int, names: tuple[str, ...] = DETECTORS) -> dict:
    """Default thresholds from wild/ crops (validation data the benchmark does not use): each crop centred on a
    gray canvas twice its size; the detection whose box holds the crop's centre and is at least a quarter of
    the crop wide is the face, every other detection a false positive. The threshold maximising
    (faces found - false positives) is chosen (ties: the higher)."""
    import cv2

    files = sorted(p for p in (data / "wild").iterdir() if p.suffix.lower() in IMAGE_EXT)[::2][:count]
    rows: dict[str, list] = {n: [] for n in names}
    dets = {n: make_detector(n, LOW[n]) for n in names}
    for k, path in enumerate(files):
        crop = load_uint8(path)
        h, w = crop.shape[:2]
        if max(h, w) > 400:
            s = 400 / max(h, w)
            crop = cv2.resize(crop, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            h, w = crop.shape[:2]
        canvas = np.full((2 * h, 2 * w, 3), 128, np.uint8)
        canvas[h // 2: h // 2 + h, w // 2: w // 2 + w] = crop
        cx, cy = w, h
        for n in names:
            boxes, scores, _ = raw_detections(dets[n], n, canvas)
            face = [s for b, s in zip(boxes, scores)
                    if b[0] <= cx <= b[2] and b[1] <= cy <= b[3] and b[2] - b[0] >= 0.25 * max(w, h) / 2]
            main = max(face) if face else None
            others = sorted(scores, reverse=True)
            if main is not None:
                others.remove(main)
            rows[n].append({"file": path.name, "face": main, "others": others})
        if (k + 1) % 20 == 0:
            print(f"[{k + 1}/{len(files)}]", flush=True)
    out = {}
    for n, rs in rows.items():
        cands = sorted({round(v, 2) for r in rs for v in ([r["face"]] if r["face"] is not None else []) + r["others"]}
                       | {LOW[n]})
        best = None
        for t in cands:
            tp = sum(r["face"] is not None and r["face"] >= t for r in rs)
            fp = sum(sum(v >= t for v in r["others"]) for r in rs)
            if best is None or tp - fp >= best[1] - best[2]:
                best = (t, tp, fp)
        assert best is not None
        at = {}
        for t in sorted({LOW[n], best[0], 0.0, 0.3, 0.5}):
            at[str(t)] = {"faces_found": sum(r["face"] is not None and r["face"] >= t for r in rs),
                          "false_positives": sum(sum(v >= t for v in r["others"]) for r in rs)}
        out[n] = {"chosen_threshold": best[0], "crops": len(rs), "at": at}
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--raw-cache", type=Path, default=None, help="keep raw detections here (resume, re-evaluate)")
    ap.add_argument("--overlays", type=Path, default=None, help="write annotated candidate views here and stop")
    ap.add_argument("--calibrate", action="store_true", help="choose default thresholds on wild/ crops")
    ap.add_argument("--count", type=int, default=150, help="crops for --calibrate")
    ap.add_argument("--detectors", default=",".join(DETECTORS), help="run only these (comma-separated)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    if args.calibrate:
        t = time.time()
        res = {"command": f"python benchmarks/detection_recall.py --calibrate --count {args.count} "
                          f"--detectors {args.detectors}",
               "machine": machine(), "detectors": calibrate(args.data, args.count, tuple(args.detectors.split(","))),
               "seconds": round(time.time() - t, 1)}
        out = args.out or CAL_OUT
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({n: r["chosen_threshold"] for n, r in res["detectors"].items()}))
        return

    files = photos(args.data)
    raw = run_raw(files, args.data, tuple(args.detectors.split(",")), args.raw_cache)
    if args.overlays:
        overlays(raw, args.data, args.overlays)
        return
    from facerestore.faces.detect import DEFAULT_SCORE_THRESHOLDS as D

    gt = json.loads(GT_FILE.read_text())
    missing = [str(p.relative_to(args.data)) for p in files if str(p.relative_to(args.data)) not in gt["photos"]]
    if missing:
        raise SystemExit(f"ground truth lacks {len(missing)} photos: {missing[:5]}")
    thresholds = {"retinaface": D["retinaface"], "dlib-hog": D["hog"], "dlib-cnn": D["cnn"],
                  "dlib-hog@0.3": 0.3, "scrfd": D["scrfd"], "scrfd@0.5": 0.5, "scrfd-native": D["scrfd"]}
    ran = set(args.detectors.split(","))
    thresholds = {k: v for k, v in thresholds.items() if k.split("@")[0] in ran}
    command = "python benchmarks/detection_recall.py" + (
        "" if ran == set(DETECTORS) else f" --detectors {args.detectors}")
    results = evaluate(gt, raw, thresholds)
    for r in results.values():
        r["measured_with"] = {"command": command, "load_average": machine()["load_average"]}
    out = args.out or OUT
    old = json.loads(out.read_text()) if out.is_file() and ran != set(DETECTORS) else {}
    for r in old.get("results", {}).values():  # rows kept from an earlier run say what they were measured with
        r.setdefault("measured_with", {"command": old.get("command"),
                                       "load_average": old.get("machine", {}).get("load_average")})
    res = {
        "command": "python benchmarks/detection_recall.py (or --detectors A,B to re-run some rows: see each row's "
                   "measured_with)",
        "machine": machine(),
        "photos": len(files),
        "detection_input": "the pipeline's copy: at most 4 MP (DETECT_MAX_PIXELS); coordinates in the photo's pixels",
        "settings": {"retinaface": "input scale 1, NMS 0.4", "dlib-hog": "upsample 1",
                     "dlib-cnn": "upsample 0 on a copy of at most 1 MP (upsample 1: ~100 s/MP here)",
                     "dlib-hog@0.3": "upsample 1, the old pipeline default --min-score 0.3",
                     "scrfd": "SCRFD-2.5G (optional, research-only weights), InsightFace's 640 x 640 letterbox of "
                              "the copy, NMS 0.4; time per MP of the copy it was given",
                     "scrfd@0.5": "as scrfd, at InsightFace's default threshold 0.5",
                     "scrfd-native": "SCRFD-2.5G at the copy's own resolution (padded to multiples of 32), NMS 0.4"},
        "results": {**old.get("results", {}), **results},
    }
    out.write_text(json.dumps(res, indent=1) + "\n")
    for n, r in results.items():
        print(f"{n:14s} thr {r['threshold']:5.2f}  >=24px {r['found_eye_dist_ge_24px']:>8s} "
              f"({r['recall_eye_dist_ge_24px']:.3f})  all {r['found_all']:>8s}  FP {r['false_positives']:3d}  "
              f"{r['seconds_per_megapixel']:.3f} s/MP")


if __name__ == "__main__":
    main()
