"""`facerestore benchmark` and its library (facerestore.benchmark): degradations parsed from their names, each face
degraded with its own seed, rows scored on the same degraded faces, paired intervals, the grid, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerestore import benchmark, degrade
from facerestore.cli import main
from facerestore.errors import InputError
from facerestore.io import read_image, write_image
from facerestore.methods import MethodSpec, Restorer


class _Identity(Restorer):
    """Returns what it is given (the degraded face, at its size)."""

    spec = MethodSpec("test-identity", "test", "identity", size=64, weights_licence="test licence")

    def _restore(self, x, *, fidelity, refs):
        return x.clone()


class _Gray(Restorer):
    """Returns mid-gray whatever it is given."""

    spec = MethodSpec("test-gray", "test", "gray", size=32)

    def _restore(self, x, *, fidelity, refs):
        return torch.full_like(x, 0.5)


def _faces(n: int = 3, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)  # smooth images: blur and resizing change them little
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def test_shorthands_do_what_their_names_say():
    x = torch.full((1, 3, 64, 64), 0.5)
    assert torch.equal(benchmark.parse_degradation("clean").apply(x, 0), x)
    assert torch.equal(benchmark.parse_degradation("blur:0").apply(x, 0), x)
    # Gaussian noise of sigma 20/255 on mid-gray (nothing clipped): the residual's std is 20/255, seeded
    noise = benchmark.parse_degradation("noise:20")
    y = noise.apply(x, 7)
    assert abs(float((y - x).std()) - 20 / 255) < 0.003
    assert torch.equal(y, noise.apply(x, 7)) and not torch.equal(y, noise.apply(x, 8))
    # a flat image survives blur, down-and-up and JPEG (up to 8-bit rounding)
    for name in ("blur:3", "down:4", "jpeg:90"):
        assert float((benchmark.parse_degradation(name).apply(x, 0) - x).abs().max()) <= 1 / 255 + 1e-6, name
    # a random image loses detail when shrunk 4x: the round trip is the bicubic down-and-up
    r = _faces(1)
    d = benchmark.parse_degradation("down:4").apply(r, 0)
    ref = degrade.resize(degrade.resize(r, size=16, method="bicubic"), size=64, method="bicubic", antialias=False)
    assert torch.allclose(d, ref) and float((d - r).abs().mean()) > 1e-3


def test_tasks_keep_the_size_and_replay_their_seed():
    x = _faces(1)
    for name in ("robust-denoise@L", "rls-x8", "realworld-gfpgan"):
        d = benchmark.parse_degradation(name)
        y = d.apply(x, 3)
        assert y.shape == x.shape and d.name == name
        assert torch.equal(y, d.apply(x, 3))
    # the task's own draw, resized back: rls-x8 is PULSE's bicubic x8
    small, _ = degrade.apply(x, "rls-x8", generator=3)
    assert small.shape[-1] == 8
    assert torch.allclose(benchmark.parse_degradation("rls-x8").apply(x, 3),
                          benchmark._back_to(small, 64))


@pytest.mark.parametrize("bad, message", [
    ("down:1", ">= 2"), ("down:x", "integer"), ("jpeg:101", "1..100"), ("noise:-1", ">= 0"), ("blur:nan", ">= 0"),
    ("warp:3", "shorthands"), ("no-such-task", "unknown degradation"), ("robust-denoise@Q", "levels XS"),
    ("sr4x@L", "no levels"),
])
def test_bad_degradations_say_what_is_wrong(bad, message):
    with pytest.raises(InputError, match=message):
        benchmark.parse_degradation(bad)


def test_each_face_keeps_its_degradation_whatever_the_count():
    faces = _faces(3)
    names = ["a", "b", "c"]
    three = benchmark.run_benchmark(faces, names, ["noise:30"], {"id": _Identity()}, ["psnr"], progress=False)
    two = benchmark.run_benchmark(faces[:2], names[:2], ["noise:30"], {"id": _Identity()}, ["psnr"], progress=False)
    assert three["scores"]["noise:30"]["input"]["psnr"][:2] == two["scores"]["noise:30"]["input"]["psnr"]
    # a later seed shifts every face's draw
    other = benchmark.run_benchmark(faces[:2], names[:2], ["noise:30"], {"id": _Identity()}, ["psnr"], seed=1,
                                    progress=False)
    assert other["scores"]["noise:30"]["input"]["psnr"][0] != two["scores"]["noise:30"]["input"]["psnr"][0]


def test_rows_are_scored_on_the_same_degraded_faces():
    faces = _faces(4)
    res = benchmark.run_benchmark(faces, list("abcd"), ["clean", "noise:15"], {"id": _Identity(), "gray": _Gray()},
                                  ["psnr", "ssim"], progress=False, keep_images=2)
    assert res["rows"] == ["input", "id", "gray"]
    noisy = res["scores"]["noise:15"]
    # the identity method returns the input at 64 px: the same scores, face by face
    assert noisy["id"]["psnr"] == pytest.approx(noisy["input"]["psnr"], abs=1e-9)
    # mid-gray against each face, computed independently
    for i in range(4):
        mse = float(((faces[i] - 0.5) ** 2).mean())
        assert noisy["gray"]["psnr"][i] == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
    # clean input is identical to the truth: PSNR is infinite, reported as None, and no pair is formed
    assert res["scores"]["clean"]["input"]["psnr"] == [None] * 4
    assert res["methods"]["id"]["weights_licence"] == "test licence"
    assert res["images"]["noise:15"]["gray"].shape == (2, 3, 64, 64)
    text = benchmark.to_markdown(res)
    assert "| id | " in text and "(+0 [+0, +0])" in text  # identical to the input on every face
    assert "(no pairs)" in text  # PSNR on the clean task
    assert "*-" in text  # gray is worse than the noisy input on SSIM or PSNR, intervals excluding zero
    json.dumps({k: v for k, v in res.items() if k != "images"})  # the rest is JSON-able
    pic = benchmark.grid(res, "noise:15")
    assert pic.shape == (14 + 2 * 64, 4 * 64, 3)  # input | id | gray | clean, 2 faces, a label strip on top


def test_paired_difference_skips_unknown_faces():
    mean, lo, hi, n = benchmark.paired_difference([1.0, 2.0, None, 5.0], [0.0, 1.0, 3.0, None])
    assert (mean, lo, hi, n) == (1.0, 1.0, 1.0, 2)


def test_against_must_be_a_row():
    res = benchmark.run_benchmark(_faces(2), ["a", "b"], ["clean"], {"id": _Identity()}, ["ssim"], progress=False)
    with pytest.raises(InputError, match="not a row"):
        benchmark.to_markdown(res, against="nope")
    text = benchmark.to_markdown(res, against="id")  # the reference row has no interval, the others do
    assert "| id | 1 | " in text and "| input | 1 (+0 [+0, +0]) | " in text


def test_cli_writes_results_and_refuses_bad_input(tmp_path, capsys):
    data = tmp_path / "faces"
    for i, face in enumerate(_faces(2, 128)):
        write_image(data / f"f{i}.png", face.permute(1, 2, 0).numpy())
    out = tmp_path / "out"
    rc = main(["benchmark", "--data", str(data), "-o", str(out), "--methods",
               "ispl@builtin:ispl-compact-128.safetensors", "--degradations", "down:4", "--metrics", "psnr,ssim",
               "--size", "128", "--grid", "1", "-q"])
    assert rc == 0
    res = json.loads((out / "benchmark.json").read_text())
    label = "ispl@builtin:ispl-compact-128.safetensors"
    assert res["faces"] == ["f0.png", "f1.png"] and res["rows"] == ["input", label]
    assert res["methods"][label]["weights"] == "builtin:ispl-compact-128.safetensors"
    assert "non-commercial" in res["methods"][label]["weights_licence"]
    assert len(res["scores"]["down:4"][label]["psnr"]) == 2
    assert "## down:4" in (out / "benchmark.md").read_text()
    assert read_image(out / "grid_down-4.png").rgb.shape == (14 + 128, 3 * 128, 3)
    capsys.readouterr()
    for argv, message in (
        (["--methods", "nope"], "unknown method"),
        (["--degradations", "down:1"], ">= 2"),
        (["--metrics", "psnr,nope"], "unknown metric"),
        (["--metrics", "fid"], "set of images"),
        (["--metrics", "psnr,niqe", "--size", "128"], "at least 192 px"),  # before any face is restored
        (["--against", "gray"], "--against"),
        (["--count", "0"], "--count"),
        (["-o", str(data)], "--data folder"),
    ):
        assert main(["benchmark", "--data", str(data), "-o", str(tmp_path / "bad"), "-q", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)
    write_image(data / "wide.png", np.zeros((16, 32, 3), np.float32))
    assert main(["benchmark", "--data", str(data), "-o", str(tmp_path / "bad"), "-q", "--size", "32", "--metrics",
                 "psnr"]) == 2
    assert "wide.png is 32x16" in capsys.readouterr().err


def test_cli_resumes_an_interrupted_run_and_refuses_another_protocol(tmp_path, monkeypatch, capsys):
    data = tmp_path / "faces"
    for i, face in enumerate(_faces(2, 128)):
        write_image(data / f"f{i}.png", face.permute(1, 2, 0).numpy())
    argv = ["benchmark", "--data", str(data), "--methods", "ispl@builtin:ispl-compact-128.safetensors",
            "--degradations", "down:4,noise:20", "--metrics", "psnr,ssim", "--size", "128", "--grid", "2", "-q"]
    assert main([*argv, "-o", str(tmp_path / "fresh")]) == 0
    fresh = json.loads((tmp_path / "fresh" / "benchmark.json").read_text())
    assert not (tmp_path / "fresh" / "benchmark.partial.jsonl").exists()  # removed once the results are written

    calls = {"n": 0}
    real_score = benchmark._score

    def interrupted(*a, **kw):  # two rows a face: the third face's first score is interrupted
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_score(*a, **kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(benchmark, "_score", interrupted)
    assert main([*argv, "-o", str(out)]) == 130
    lines = (out / "benchmark.partial.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["protocol"]["seed"] == 0  # the protocol, then 2 faces
    with open(out / "benchmark.partial.jsonl", "a") as f:
        f.write('{"degradation": "noise:20", "fa')  # a line torn by the interrupt
    monkeypatch.setattr(benchmark, "_score", real_score)
    calls["n"] = 0
    capsys.readouterr()
    assert main([*argv, "-o", str(out)]) == 0
    assert "resuming: 2 of 4 faces already measured" in capsys.readouterr().err
    resumed = json.loads((out / "benchmark.json").read_text())
    assert resumed["scores"] == fresh["scores"]  # the same numbers as one uninterrupted run
    assert read_image(out / "grid_noise-20.png").rgb.shape == (14 + 2 * 128, 3 * 128, 3)
    # faces measured under another protocol in the same folder are refused, in one line, and left as they are
    foreign = json.dumps({"protocol": {"seed": 5}}) + "\n" + lines[1] + "\n"
    (out / "benchmark.partial.jsonl").write_text(foreign)
    assert main([*argv, "-o", str(out)]) == 2
    assert "another protocol" in capsys.readouterr().err
    assert (out / "benchmark.partial.jsonl").read_text() == foreign
    # a run that stopped before its first face leaves nothing worth keeping: the next run starts over
    (out / "benchmark.partial.jsonl").write_text(json.dumps({"protocol": {"seed": 5}}) + "\n")
    assert main([*argv, "-o", str(out)]) == 0
    assert json.loads((out / "benchmark.json").read_text())["scores"] == fresh["scores"]


def test_cli_held_out_faces_follow_the_projects_hold_out_rule(tmp_path):
    data = tmp_path / "faces"
    faces = _faces(4, 128)
    for name, face in zip(("00000", "00001", "00010", "face0"), faces):
        write_image(data / f"{name}.png", face.permute(1, 2, 0).numpy())
    out = tmp_path / "out"
    argv = ["benchmark", "--data", str(data), "-o", str(out), "--methods", "ispl@builtin:ispl-compact-128.safetensors",
            "--degradations", "clean", "--metrics", "ssim", "--size", "128", "--grid", "0", "-q"]
    assert main([*argv, "--held-out"]) == 0
    assert json.loads((out / "benchmark.json").read_text())["faces"] == ["00000.png", "00010.png"]
    assert main(argv) == 0
    assert json.loads((out / "benchmark.json").read_text())["faces"] == ["00000.png", "00001.png", "00010.png",
                                                                         "face0.png"]
    empty = tmp_path / "none"
    write_image(empty / "00001.png", faces[0].permute(1, 2, 0).numpy())
    assert main([*argv[:2], str(empty), *argv[3:], "--held-out"]) == 2
    only_held_out = tmp_path / "held"  # nothing to train on is no error here: the faces are all held out
    for name, face in zip(("00020", "00030"), faces):
        write_image(only_held_out / f"{name}.png", face.permute(1, 2, 0).numpy())
    assert main([*argv[:2], str(only_held_out), *argv[3:], "--held-out"]) == 0
    assert json.loads((out / "benchmark.json").read_text())["faces"] == ["00020.png", "00030.png"]


def test_cli_applies_steps_and_half_only_where_a_method_takes_them(tmp_path, capsys):
    from facerestore.cli.benchmark import method_budget

    assert method_budget("ispl", steps=60, half=False, device="cpu") == (
        None, False, ["--steps: not used by ispl (a fixed network)"])
    assert method_budget("rls", steps=60, half=True, device="cpu") == (60, True, [])
    steps, half, notes = method_budget("mfpsnet", steps=None, half=True, device="cpu")
    assert (steps, half) == (None, False) and notes == ["--half: mfpsnet runs in fp32 (its precisions: fp32)"]
    data = tmp_path / "faces"
    write_image(data / "f0.png", _faces(1, 128)[0].permute(1, 2, 0).numpy())
    rc = main(["benchmark", "--data", str(data), "-o", str(tmp_path / "out"), "--methods",
               "ispl@builtin:ispl-compact-128.safetensors", "--degradations", "down:4", "--metrics", "psnr",
               "--size", "128", "--grid", "0", "-q", "--steps", "5"])
    assert rc == 0 and "note: --steps: not used by ispl" in capsys.readouterr().err
    missing = tmp_path / "out2"  # an input that does not exist leaves no output folder behind
    assert main(["benchmark", "--data", str(tmp_path / "nope"), "-o", str(missing), "-q"]) == 2
    assert "input not found" in capsys.readouterr().err and not missing.exists()
