"""One short GPU lease, one command: the CUDA tests, ISPL at 512 px trained on generator faces (two loss variants
side by side on the one GPU), and the GPU speed rows; everything worth keeping is copied into ``--out``.

    FACERESTORE_HOME=<cache holding mobilestylegan-ffhq-1024> \\
        python scripts/gpu_train_ispl512.py --budget-s 540 --out OUT_DIR

Why a driver: the lease is minutes long and cannot be extended, so the number of steps (which sets the
learning-rate decay) is computed from a timed calibration on the same machine instead of guessed, and every
stage is bounded by the budget; each trainer also stops itself at its time limit and exports its EMA weights.

Stages (seconds measured from the start):
1. ``pytest -m gpu`` on the CUDA tests (tests/test_gpu.py and the degradation/metric CUDA tests), log kept;
2. calibration: both variants for ``--calib-steps`` steps at the same time (bf16 autocast; float32 if that fails),
   giving seconds per step with the GPU shared as it will be, and the generator's rendering rate;
3. the two runs of ``configs/ispl-compact-512.yaml`` (``--fresh``), steps = what fits the budget;
4. ``benchmarks/restore_speed.py --gpu-only`` with the new weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ispl-compact-512.yaml"
VARIANTS = {"ispl-compact-512": [], "ispl-compact-512-p20": ["losses.pixel=20.0"]}
GPU_TESTS = ["tests/test_gpu.py", "tests/degrade/test_noise.py", "tests/degrade/test_resize.py",
             "tests/metrics/test_fullref.py", "tests/metrics/test_niqe.py"]


def log(msg: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)


def run_together(cmds: list[list[str]], logs: list[Path], timeout: float, env: dict) -> list[int]:
    """Start every command at once, wait for all (killing what outlives ``timeout``); their return codes."""
    procs = []
    for cmd, path in zip(cmds, logs):
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=path.open("w"), stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(-9)
    return codes


def train_cmd(name: str, sets: list[str], config: Path = CONFIG) -> list[str]:
    cmd = [sys.executable, "-m", "facerestore", "train", str(config), "--quiet", "--fresh", "--set", f"name={name}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def seconds_per_step(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    first, last = rows[0], rows[-1]  # the first logged step carries the warm-up; measure after it
    return (last["time_s"] - first["time_s"]) / (last["step"] - first["step"])


def render_rate(device: str, count: int = 96) -> float:
    """Generator faces per second at 512 px on ``device`` (one process; a warm-up batch first)."""
    import torch

    from facerestore.train.synth import render_synth

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    spec = {"count": 16 if device == "cuda" else 1, "seed": 0}
    render_synth(spec, 512, device)
    sync()
    t = time.monotonic()
    render_synth({**spec, "count": count}, 512, device)
    sync()
    rate = count / (time.monotonic() - t)
    if device == "cuda":
        torch.cuda.empty_cache()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall seconds for everything")
    ap.add_argument("--speed-s", type=float, default=75.0, help="seconds kept for the speed rows")
    ap.add_argument("--tests-s", type=float, default=60.0, help="at most this long for the CUDA tests")
    ap.add_argument("--calib-steps", type=int, default=60)
    ap.add_argument("--max-faces", type=int, default=4000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every run (repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                    help="runs side by side (default: ispl-compact-512 and ispl-compact-512-p20 with losses.pixel=20)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="check this driver on a CPU: 64 px, float32, tiny budget (no CUDA tests or speed rows)")
    args = ap.parse_args()
    dev = "cpu" if args.cpu_smoke else "cuda"
    smoke = ["device=cpu", "data.size=64", "data.batch_size=2"] if args.cpu_smoke else []
    smoke = [*args.sets, *smoke]
    variants = VARIANTS
    if args.variant:
        variants = {}
        for v in args.variant:
            name, _, sets = v.partition(":")
            variants[name] = [x for x in sets.split(",") if x]
    t0 = time.monotonic()
    end = t0 + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    runs = Path("/tmp/gpu_runs")
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "6",
           "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}:{os.environ.get('PYTHONPATH', '')}"}
    report: dict = {"budget_s": args.budget_s}
    try:
        # 1. CUDA tests
        if not (args.cpu_smoke or args.skip_tests):
            rc = run_together([[sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                *GPU_TESTS]], [args.out / "gpu_tests.log"], args.tests_s, env)[0]
            report["gpu_tests_rc"] = rc
            log(f"CUDA tests rc {rc}: {(args.out / 'gpu_tests.log').read_text().strip().splitlines()[-1:]}", t0)

        # 2. calibration
        rate = render_rate(dev, 96 if dev == "cuda" else 2)
        report["render_faces_per_s_alone"] = rate
        log(f"generator renders {rate:.1f} faces/s at 512 px", t0)
        amp = "bf16"
        for amp in ("bf16", "none") if dev == "cuda" else ("none",):
            sets = [*smoke, f"amp={amp}", f"steps={args.calib_steps}", f"log_every={max(1, args.calib_steps // 6)}",
                    "ckpt_every=0", f"output_dir={runs / 'calib'}",
                    f"data.synth.count={4 if args.cpu_smoke else 64}"]
            tc = time.monotonic()
            codes = run_together([train_cmd(n, v + sets, args.config) for n, v in variants.items()],
                                 [runs / f"calib-{n}.log" for n in variants], 150, env)
            wall = time.monotonic() - tc
            if all(c == 0 for c in codes):
                break
            log(f"calibration with amp={amp} failed ({codes}); see the calib logs", t0)
            for n in variants:
                shutil.copy(runs / f"calib-{n}.log", args.out / f"calib-{n}-{amp}.log")
        else:
            raise SystemExit("calibration failed with bf16 and float32")
        step_s = max(seconds_per_step(runs / "calib" / n) for n in variants)
        overhead = wall - args.calib_steps * step_s  # start-up, model build, 64 faces rendered
        log(f"calibration (amp={amp}): {step_s * 1000:.0f} ms per step with both runs on the GPU, "
            f"{overhead:.0f} s start-up", t0)

        # 3. the runs
        avail = end - time.monotonic() - args.speed_s - 15
        faces = int(min(args.max_faces, max(256, 0.15 * avail * rate / len(variants))))
        render_s = faces / (rate / len(variants))
        train_s = avail - overhead - render_s
        steps = int(0.95 * train_s / step_s)
        report.update(amp=amp, step_s=step_s, startup_s=overhead, faces=faces, steps=steps, train_s=train_s)
        if steps < 20:
            raise SystemExit(f"only {steps} steps would fit the budget: nothing trained")
        log(f"main runs: {faces} faces each, {steps} steps, time limit {train_s:.0f} s", t0)
        sets = [*smoke, f"amp={amp}", f"steps={steps}", f"time_limit_s={int(train_s)}", f"output_dir={runs}",
                f"data.synth.count={faces}"]
        codes = run_together([train_cmd(n, v + sets, args.config) for n, v in variants.items()],
                             [args.out / f"{n}.log" for n in variants], avail + 10, env)
        report["train_rc"] = dict(zip(variants, codes))
        log(f"runs ended: {codes}", t0)
        weights = {}
        for n in variants:
            for stem in ("final", "latest"):
                src = runs / n / f"{stem}.safetensors"
                if src.is_file():
                    shutil.copy(src, args.out / f"{n}.safetensors")
                    shutil.copy(src.with_suffix(".json"), args.out / f"{n}.json")
                    weights[n] = str(src)
                    break
            metrics = runs / n / "metrics.jsonl"
            if metrics.is_file():
                shutil.copy(metrics, args.out / f"{n}.metrics.jsonl")

        # 4. speed rows
        left = end - time.monotonic() - 5
        if left > 20 and args.speed_s > 0 and not args.cpu_smoke:
            cmd = [sys.executable, "benchmarks/restore_speed.py", "--gpu-only", "--repeat", "5",
                   "--out", str(args.out / "restore_speed_gpu.json")]
            for n, path in weights.items():
                cmd += ["--weights", f"{n}={path}"]
            rc = run_together([cmd], [args.out / "restore_speed_gpu.log"], left, env)[0]
            report["speed_rc"] = rc
            log(f"speed rows rc {rc}", t0)
    finally:
        # the lease returns at most 8 files: the weights as they are, every log and JSON in one archive
        report["wall_s"] = time.monotonic() - t0
        (args.out / "driver.json").write_text(json.dumps(report, indent=2) + "\n")
        small = sorted(p for p in args.out.iterdir() if p.is_file() and p.suffix != ".safetensors")
        with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
            for p in small:
                tar.add(p, arcname=p.name)
        for p in small:
            p.unlink()


if __name__ == "__main__":
    main()
