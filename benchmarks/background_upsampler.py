"""Background upsampler: ESRGAN-thick (tiled) vs Lanczos, NIQE of the upscaled background and peak memory of
``facerestore restore`` with each.

Two parts, both recorded in results/background_upsampler.json:

- ``niqe``: 128x128 crops from the centre-left of whole photos (../shared/data/realworld/*/whole_imgs and
  ../shared/data/photos, first --photos of each, sorted), each photo first reduced to 1/4 so the crop is a
  low-resolution background; each crop upscaled x4 by ESRGAN and by Lanczos; NIQE (lower = more natural, ours:
  MATLAB-compatible) of the 512x512 results, mean and per photo.
- ``memory``: ``/usr/bin/time -v facerestore restore --upscale U --bg-upsampler B`` on a synthetic photo
  (the bundled astronaut enlarged on a grey canvas, JPEG q90) of --size WxH; peak RSS from time's
  "Maximum resident set size".

ESRGAN on CPU costs about 1-2 ms per input pixel at x4 on 2 shared cores: the 2000x1500 acceptance run is
~1 hour there (use --device cuda where a GPU exists).

    python benchmarks/background_upsampler.py --photos 4 --memory 2000x1500:lanczos --memory 500x375:esrgan
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LIMIT_GB = 3.0


def make_photo(path: Path, width: int, height: int) -> None:
    import cv2

    face = cv2.imread(str(REPO / "examples" / "astronaut.png"))
    side = min(width, height)
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((height, width, 3), 128, np.uint8)
    x0 = (width - side) // 2
    canvas[:side, x0:x0 + side] = big
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])


def niqe_part(n_photos: int, device: str) -> dict:
    import torch

    from facerestore.faces.background import esrgan_upscale
    from facerestore.faces.paste import upscale_image
    from facerestore.io import read_rgb
    from facerestore.metrics.registry import create

    niqe = create("niqe")
    files = []
    for folder in [*sorted(DATA.glob("realworld/*/whole_imgs")), DATA / "photos"]:
        files += sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n_photos]
    rows = []
    for p in files:
        img = read_rgb(p)
        small = upscale_image(img, 0.25)
        h, w = small.shape[:2]
        if min(h, w) < 128:
            continue
        y0, x0 = (h - 128) // 2, max(0, w // 4 - 64)
        crop = np.ascontiguousarray(small[y0:y0 + 128, x0:x0 + 128])
        t = time.perf_counter()
        sr = esrgan_upscale(crop, 4, device=device)
        t_sr = time.perf_counter() - t
        lz = upscale_image(crop, 4)

        def score(x: np.ndarray) -> float:
            return float(niqe(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0])

        rows.append({"photo": str(p.relative_to(DATA)), "niqe_esrgan": score(sr), "niqe_lanczos": score(lz),
                     "esrgan_s": round(t_sr, 2)})
        print(rows[-1], flush=True)
    e = np.array([r["niqe_esrgan"] for r in rows])
    lz = np.array([r["niqe_lanczos"] for r in rows])
    return {"crops": len(rows), "niqe_esrgan_mean": float(e.mean()), "niqe_lanczos_mean": float(lz.mean()),
            "esrgan_better_on": int((e < lz).sum()), "rows": rows,
            "setup": "128x128 crop of the photo reduced to 1/4, upscaled x4 to 512x512; NIQE lower is better"}


def memory_part(size: str, bg: str, upscale: float, device: str) -> dict:
    w, h = (int(v) for v in size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.jpg"
        make_photo(photo, w, h)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "facerestore", "restore", "-i", str(photo), "-o",
               str(Path(tmp) / "out"), "--upscale", str(upscale), "--bg-upsampler", bg, "--device", device, "-q"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    peak_gb = int(m.group(1)) / 1024**2 if m else float("nan")
    return {"photo": f"{w}x{h} JPEG q90 (astronaut on a grey canvas)", "upscale": upscale, "bg_upsampler": bg,
            "device": device, "exit_code": proc.returncode, "peak_rss_gb": round(peak_gb, 3), "wall_s": round(wall, 1),
            "limit_gb": LIMIT_GB, "within_limit": bool(peak_gb < LIMIT_GB and proc.returncode == 0),
            "stderr_tail": [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("\t")][-2:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=4, help="photos per folder for NIQE (0 = skip)")
    ap.add_argument("--memory", action="append", default=[], metavar="WxH:BG",
                    help="a restore run to measure, e.g. 2000x1500:esrgan (repeatable)")
    ap.add_argument("--upscale", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    result: dict = {"command": "python benchmarks/background_upsampler.py " + " ".join(sys.argv[1:]),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_before": os.getloadavg()}}
    if args.photos > 0:
        result["niqe"] = niqe_part(args.photos, args.device)
    result["memory"] = []
    for spec in args.memory:
        size, bg = spec.split(":")
        result["memory"].append(memory_part(size, bg, args.upscale, args.device))
        print(result["memory"][-1], flush=True)
    result["machine"]["load_after"] = os.getloadavg()
    out = REPO / "benchmarks" / "results" / "background_upsampler.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "niqe"} | (
        {"niqe": {k: v for k, v in result["niqe"].items() if k != "rows"}} if "niqe" in result else {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
