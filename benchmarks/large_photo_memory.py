"""Peak memory and time of `facerestore restore` on a large photo (issue 12: 8000x6000 within 4 GB of RAM).

    python benchmarks/large_photo_memory.py [--width 8000 --height 6000 --upscale 1]

The photo is the bundled astronaut enlarged (bicubic) onto a grey 8000x6000 canvas and saved as JPEG q90 in a
temporary folder; the command runs in a child process whose peak resident memory (``ru_maxrss`` of the child)
is recorded with the wall time. Reference: the same command on the tree before the memory work (commit
bbae0a9) peaked at 4.51 GB / 40.8 s, measured by hand with /usr/bin/time on this machine.
Writes results/large_photo_memory.json.
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

from background_upsampler import make_photo  # the same synthetic photo (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]
LIMIT_GB = 4.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=8000)
    ap.add_argument("--height", type=int, default=6000)
    ap.add_argument("--upscale", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "large.jpg"
        make_photo(photo, args.width, args.height)
        cmd = [sys.executable, "-m", "facerestore", "restore", "-i", str(photo), "-o", str(Path(tmp) / "out"),
               "--upscale", str(args.upscale), "--device", "cpu", "-q"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    result = {
        "command": "python benchmarks/large_photo_memory.py " + " ".join(sys.argv[1:]),
        "photo": f"{args.width}x{args.height} JPEG q90 (astronaut enlarged on a grey canvas)",
        "upscale": args.upscale, "exit_code": proc.returncode, "stderr_tail": proc.stderr.strip().splitlines()[-1:],
        "peak_rss_gb": round(peak_gb, 3), "wall_s": round(wall, 2), "limit_gb": LIMIT_GB,
        "within_limit": peak_gb < LIMIT_GB and proc.returncode == 0,
        "reference_before": {"commit": "bbae0a9", "peak_rss_gb": 4.51, "wall_s": 40.8},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }
    out = REPO / "benchmarks" / "results" / "large_photo_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
