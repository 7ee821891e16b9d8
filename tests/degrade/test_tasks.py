"""Tests of the task registry (facerestore.degrade.apply / surrogate / list_tasks / get_task).

Parameter ranges are checked against the numbers of the papers / released code (re-typed here from
docs/degradations.md, not read from the presets); outputs against independent references (PIL, OpenCV,
numpy block means, closed-form noise statistics); replay from JSON records; surrogate agreement.
"""

from __future__ import annotations

import itertools
import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from facerestore import degrade
from facerestore.degrade import tasks as T
from facerestore.errors import InputError

ROBUST_SINGLE = ["robust-upsample", "robust-denoise", "robust-deartifact", "robust-inpaint"]
EXPECTED = [
    "sr4x",
    "mosaic16x",
    "denoise",
    "deblur",
    "jpeg",
    "full",
    "sr4x-code",
    "jpeg-code",
    "full-code",
    "mfpsnet-full",
    "mfpsnet-blur",
    "mfpsnet-down",
    "mfpsnet-noise",
    "mfpsnet-jpeg",
    "mfpsnet-full-code",
    *ROBUST_SINGLE,
    "robust-deartifact-code",
    "rls-x8",
    "rls-x16",
    "rls-x64",
    "rls-x16-gaussian-noise",
    "rls-x16-salt-pepper",
    "rls-x16-salt-pepper-code",
    "rls-x16-gaussian-blur",
    "rls-motion-blur-x16",
    "realworld-gfpgan",
    "realworld-gfpgan-color",
    "realworld-vqfr",
]


def _draw(task: str, n: int, level=None, size=(64, 64), seed=0) -> list[dict]:
    """n records of a task (sampling only, no images)."""
    info = degrade.get_task(task)
    g = torch.Generator().manual_seed(seed)
    lvl = T._resolve_level(info, level)
    return [info.sampler(g, size[0], size[1], lvl) for _ in range(n)]


def _ops(recs, name):
    return [op for r in recs for op in r["ops"] if op["op"] == name]


def _binomial_ok(count: int, n: int, p: float, z: float = 4.5) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def face(astronaut) -> torch.Tensor:
    """The astronaut photo at 128 x 128 (PIL antialiased bicubic), (1, 3, 128, 128)."""
    im = Image.fromarray((astronaut * 255 + 0.5).astype(np.uint8)).resize((128, 128), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------------------------- registry


def test_registry_has_every_preset():
    names = [t.name for t in degrade.list_tasks()]
    assert len(names) == len(set(names))
    missing = set(EXPECTED) - set(names)
    assert not missing
    for t in degrade.list_tasks():
        assert t.paper and t.description and t.source in ("paper", "code", "paper+code", "cited")
        assert (t.default_level in t.levels) if t.levels else t.default_level is None


def test_paper002_has_31_tasks_in_paper_order():
    tasks = [t for t in degrade.list_tasks() if t.paper.startswith("002") and not t.name.endswith("-code")]
    singles = [t for t in tasks if t.name in ROBUST_SINGLE]
    comps = [t for t in tasks if t.name not in ROBUST_SINGLE]
    assert all(t.levels == ("XS", "S", "M", "L", "XL") for t in singles)
    assert all(t.levels == ("M",) for t in comps)
    assert sum(len(t.levels) for t in tasks) == 31
    short = ["upsample", "denoise", "deartifact", "inpaint"]
    expected = {"robust-" + "+".join(c) for n in (2, 3, 4) for c in itertools.combinations(short, n)}
    assert {t.name for t in comps} == expected and len(expected) == 11


def test_get_task_aliases_and_errors():
    assert degrade.get_task("SR4X").name == "sr4x"
    assert degrade.get_task("robust-UNA").name == "robust-upsample+denoise+deartifact"
    assert degrade.get_task("robust-unap").name == "robust-upsample+denoise+deartifact+inpaint"
    with pytest.raises(InputError):
        degrade.get_task("no-such-task")


def test_levels_parse():
    info = degrade.get_task("robust-upsample")
    assert T._resolve_level(info, None) == "M"
    assert T._resolve_level(info, "l") == T._resolve_level(info, 3) == T._resolve_level(info, " 3") == "L"
    for bad in ("XXL", 7, -1):
        with pytest.raises(InputError):
            T._resolve_level(info, bad)
    with pytest.raises(InputError):
        T._resolve_level(degrade.get_task("sr4x"), "M")
    with pytest.raises(InputError):
        T._resolve_level(degrade.get_task("robust-upsample+denoise"), "XS")


# ----------------------------------------------------------------------------------------------- ranges


def test_ispl_noise_and_blur_ranges():
    recs = _draw("denoise", 600)
    kinds = [r["ops"][0]["op"] for r in recs]
    for kind in ("gaussian_noise", "laplacian_noise", "random_sign_poisson_noise"):
        assert _binomial_ok(kinds.count(kind), 600, 1 / 3)
    assert all(20 / 255 <= op["sigma"] <= 40 / 255 and not op["gray"] for op in _ops(recs, "gaussian_noise"))
    assert all(20 / 255 <= op["scale"] <= 40 / 255 for op in _ops(recs, "laplacian_noise"))
    assert all(15 <= op["lam"] <= 30 and op["per_channel"] for op in _ops(recs, "random_sign_poisson_noise"))

    kernels = [op["kernel"] for op in _ops(_draw("deblur", 600), "blur")]
    motion = [k for k in kernels if k["kind"] == "motion"]
    gauss = [k for k in kernels if k["kind"] != "motion"]
    assert _binomial_ok(len(motion), 600, 0.5)
    assert {k["size"] for k in motion} == set(range(11, 22, 2))  # 10..20 made odd, as imgaug does
    assert all(k["length"] == k["size"] and 0 <= k["angle"] < 360 for k in motion)
    assert all(3 <= k["sigma_x"] <= 8 and k["sigma_x"] == k["sigma_y"] for k in gauss)
    # imgaug: ksize = int(max(c * sigma, 5)) made odd, c = 3.3 / 2.9 / 2.6 below 3 / 5 / above
    for k in gauss:
        s = k["sigma_x"]
        c = 2.9 if s < 5 else 2.6
        expect = int(c * s)
        assert k["size"] == expect + (expect % 2 == 0)


def test_ispl_jpeg_paper_and_code():
    q = [op["quality"] for op in _ops(_draw("jpeg", 500), "jpeg")]
    assert min(q) == 50 and max(q) == 85 and all(isinstance(v, int) for v in q)
    code = _ops(_draw("jpeg-code", 500), "jpeg")
    assert all(50 <= op["compression"] <= 85 for op in code)
    # imgaug maps compression c to quality round(1 + 99 * (1 - c / 101)): 50 -> 51, 85 -> 17
    for op in code:
        assert op["quality"] == int(np.round(1 + 99 * (1 - op["compression"] / 101)))
    assert {op["quality"] for op in code} <= set(range(17, 52)) and min(op["quality"] for op in code) <= 18


def test_ispl_sr4x_code_and_full_order():
    for r in _draw("sr4x-code", 200, size=(512, 512)):
        down, up = r["ops"]
        assert 0.125 <= down["scale"] <= 0.25 and down["size"] == [math.floor(512 * down["scale"] + 0.5)] * 2
        assert down["method"] == up["method"] == "bicubic" and not down["antialias"] and up["size"] == [512, 512]
    recs = _draw("full", 400, size=(128, 128))
    orders = {tuple(r["order"]) for r in recs}
    assert len(orders) == 24  # every permutation of down / noise / blur / jpeg occurs
    for r in recs:
        names = [op["op"] for op in r["ops"]]
        noise = next(n for n in names if n.endswith("noise"))
        groups = {"down": ["resize", "resize"], "blur": ["blur"], "jpeg": ["jpeg"], "noise": [noise]}
        assert names == [n for g in r["order"] for n in groups[g]]
        assert [op["size"] for op in r["ops"] if op["op"] == "resize"] == [[32, 32], [128, 128]]


def test_mfpsnet_ranges():
    recs = _draw("mfpsnet-full", 500, size=(128, 128))
    for r in recs:
        blur, down, noise, jpg, back = r["ops"]
        assert [o["op"] for o in r["ops"]] == ["blur", "resize", "gaussian_noise", "jpeg", "resize"]
        assert 0.2 <= blur["kernel"]["sigma_x"] <= 10 and blur["kernel"]["size"] == 41
        assert 1 <= down["scale"] <= 8 and down["size"] == [int(128 // down["scale"])] * 2
        assert 0 <= noise["sigma"] <= 15 / 255 and 60 <= jpg["quality"] <= 100 and back["size"] == [128, 128]
    assert max(r["ops"][3]["quality"] for r in recs) == 100 and min(r["ops"][3]["quality"] for r in recs) == 60
    code = _draw("mfpsnet-full-code", 50, size=(128, 128))[0]["ops"]
    assert [o["op"] for o in code][-2:] == ["resize", "resize"] and code[-2]["size"] == [64, 64]
    assert code[0]["op"] == "blur" and code[1]["op"].endswith("noise") and code[2]["op"] == "jpeg"


@pytest.mark.parametrize(
    "level,factor,photons,p,q,strokes",
    [
        ("XS", 2, 96, 0.04, 18, 1),
        ("S", 4, 48, 0.08, 15, 5),
        ("M", 8, 24, 0.16, 12, 9),
        ("L", 16, 12, 0.32, 9, 13),
        ("XL", 32, 6, 0.64, 6, 17),
    ],
)
def test_robust_levels(level, factor, photons, p, q, strokes):
    ups = _draw("robust-upsample", 300, level, size=(1024, 1024))
    methods = [r["ops"][0]["method"] for r in ups]
    for m in ("bilinear", "bicubic", "lanczos"):
        assert _binomial_ok(methods.count(m), 300, 1 / 3)
    assert all(r["ops"][0]["size"] == [1024 // factor] * 2 and r["ops"][0]["antialias"] for r in ups)
    (dn,) = _draw("robust-denoise", 1, level)[0]["ops"]
    assert (dn["photons"], dn["p"]) == (photons, p)
    (jp,) = _draw("robust-deartifact", 1, level)[0]["ops"]
    assert (jp["quality"], jp["subsampling"]) == (q, "4:2:2")
    assert _draw("robust-deartifact-code", 1, level)[0]["ops"][0]["subsampling"] == "4:2:0"
    (mk,) = _draw("robust-inpaint", 1, level)[0]["ops"]
    assert (mk["n_strokes"], mk["width"]) == (strokes, 0.08)


def test_robust_composition_order_and_sizes():
    (rec,) = _draw("robust-upsample+denoise+deartifact+inpaint", 1, size=(256, 256))
    ops = rec["ops"]
    assert [o["op"] for o in ops] == ["resize", "poisson_dead_pixels", "jpeg", "mask"]
    assert ops[0]["size"] == [32, 32] and ops[3]["size"] == [32, 32]  # the mask is drawn on the x8 image
    assert (ops[1]["photons"], ops[2]["quality"], ops[3]["n_strokes"]) == (24, 12, 9)


def test_rls_values():
    assert _draw("rls-x64", 1)[0]["ops"] == [{"op": "pulse_bicubic", "factor": 64}]
    noise = _draw("rls-x16-gaussian-noise", 1)[0]["ops"][1]
    assert noise["sigma"] == 0.1
    sp = _draw("rls-x16-salt-pepper", 1)[0]["ops"][1]
    assert (sp["amount"], sp["salt_ratio"]) == (0.05, 0.5)
    assert _draw("rls-x16-salt-pepper-code", 1)[0]["ops"][1]["salt_ratio"] == 1.0
    motion = _draw("rls-motion-blur-x16", 1, size=(1024, 1024))[0]["ops"][0]["kernel"]
    assert (motion["size"], motion["angle"]) == (49, 45.0)
    assert _draw("rls-motion-blur-x16", 1, size=(512, 512))[0]["ops"][0]["kernel"]["size"] == 25


@pytest.mark.parametrize(
    "task,sigma,scale,noise,quality",
    [
        ("realworld-gfpgan", (0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        ("realworld-vqfr", (1, 15), (1, 30), (0, 20), (30, 90)),
    ],
)
def test_realworld_ranges(task, sigma, scale, noise, quality):
    recs = _draw(task, 200, size=(512, 512))
    kernels = [r["ops"][0]["kernel"] for r in recs]
    assert _binomial_ok(sum(k["kind"] == "iso" for k in kernels), 200, 0.5)
    assert {k["kind"] for k in kernels} == {"iso", "aniso"} and all(k["size"] == 41 for k in kernels)
    for k in kernels:
        assert sigma[0] <= k["sigma_x"] <= sigma[1] and sigma[0] <= k["sigma_y"] <= sigma[1]
        assert -math.pi <= k["theta"] <= math.pi
        if k["kind"] == "iso":
            assert k["sigma_x"] == k["sigma_y"]
    for r in recs:
        _, down, nz, jp, back, quant = r["ops"]
        assert scale[0] <= down["scale"] <= scale[1] and down["size"] == [int(512 // down["scale"])] * 2
        assert down["method"] == back["method"] == "bilinear" and not down["antialias"]
        assert noise[0] / 255 <= nz["sigma"] <= noise[1] / 255
        assert quality[0] <= jp["quality"] < quality[1] and jp["subsampling"] == "4:2:0"
        assert back["size"] == [512, 512] and quant == {"op": "quantize", "bits": 8}


def test_realworld_color_probabilities():
    from facerestore.degrade.presets import realworld

    g = torch.Generator().manual_seed(0)
    recs = []
    for _ in range(1500):  # the colour part alone (drawing 41x41 kernels is the slow part of the sampler)
        ops, order = realworld.color_ops(g)
        recs.append({"ops": ops, **({"order": order} if order else {})})
    (full,) = _draw("realworld-gfpgan-color", 1, seed=3)
    assert [op["op"] for op in full["ops"]][:5] == ["blur", "resize", "gaussian_noise", "jpeg", "resize"]
    assert full["ops"][-1] == {"op": "quantize", "bits": 8}
    shifts = _ops(recs, "color_shift")
    assert _binomial_ok(len(shifts), 1500, 0.3)
    assert all(abs(v) <= 20 / 255 for op in shifts for v in op["shift"])
    assert 3 <= len(_ops(recs, "grayscale")) <= 35  # probability 0.01
    jittered = [r for r in recs if "order" in r]
    assert _binomial_ok(len(jittered), 1500, 0.3)
    for r in jittered:
        assert sorted(r["order"]) == ["brightness", "contrast", "hue", "saturation"]
        adj = [op for op in r["ops"] if op["op"] == "adjust_color"]
        assert [next(iter(set(op) - {"op"})) for op in adj] == r["order"]
        values = {k: v for op in adj for k, v in op.items() if k != "op"}
        assert 0.5 <= values["brightness"] <= 1.5 and 0.5 <= values["contrast"] <= 1.5
        assert 0 <= values["saturation"] <= 1.5 and -0.1 <= values["hue"] <= 0.1


# ----------------------------------------------------------------------------------------------- apply


RANDOM_TASKS = [
    "denoise",
    "full-code",
    "mfpsnet-full",
    "robust-denoise+inpaint",
    "realworld-gfpgan-color",
    "rls-x16-salt-pepper",
]


@pytest.mark.parametrize("task", RANDOM_TASKS)
def test_apply_deterministic_and_replayable(task, face):
    x = torch.cat([face, face.flip(-1), face.flip(-2)])
    y1, p1 = degrade.apply(x, task, generator=7)
    y2, p2 = degrade.apply(x, task, generator=torch.Generator().manual_seed(7))
    assert torch.equal(y1, y2) and p1 == p2
    y3, _ = degrade.apply(x, task, generator=8)
    assert not torch.equal(y1, y3)
    assert y1.min() >= 0 and y1.max() <= 1 and y1.dtype == x.dtype
    # replay from JSON (values and seeds are sufficient), the whole batch and one sample alone
    records = json.loads(json.dumps(p1))
    assert torch.equal(degrade.apply(x, task, params=records)[0], y1)
    assert torch.equal(degrade.apply(x[1:2], task, params=[records[1]])[0], y1[1:2])


def test_apply_checks_inputs(face):
    _, params = degrade.apply(face, "sr4x-code", generator=0)
    with pytest.raises(InputError):
        degrade.apply(face, "jpeg", params=params)  # records of another task
    with pytest.raises(InputError):
        degrade.apply(torch.cat([face, face]), "sr4x-code", params=params)  # one record for two images
    with pytest.raises(InputError):
        degrade.apply(face[:, :, :64], "sr4x-code", params=params)  # another input size
    with pytest.raises(InputError):
        degrade.apply(face[:, :1], "sr4x")


def test_apply_keeps_float64(face):
    y, _ = degrade.apply(face.double(), "mfpsnet-full", generator=1)
    assert y.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_apply_keeps_half_precision_on_the_fast_paths(face, dtype):
    """The fast bilinear path has no CPU antialias kernel for half types: it computes in float32 and returns the
    input's dtype, within rounding of the float32 result."""
    for task in ("mfpsnet-down", "realworld-gfpgan"):
        y, params = degrade.apply(face.to(dtype), task, generator=3)
        ref, _ = degrade.apply(face.to(dtype).float(), task, params=params)
        assert y.dtype == dtype and y.shape == ref.shape
        assert float((y.float() - ref).abs().mean()) < 2 / 255, task


def test_an_empty_batch_is_one_clear_error(face):
    with pytest.raises(InputError, match="empty batch"):
        degrade.apply(face[:0], "sr4x")


def test_sr4x_matches_pil(face):
    y, _ = degrade.apply(face, "sr4x")
    im = Image.fromarray((face[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    ref = np.asarray(im.resize((32, 32), Image.BICUBIC).resize((128, 128), Image.BICUBIC), dtype=np.float32) / 255
    diff = np.abs(y[0].permute(1, 2, 0).numpy() - ref)
    assert diff.mean() < 0.5 / 255 and diff.max() <= 3 / 255


def test_mosaic_matches_block_means(face):
    y, _ = degrade.apply(face, "mosaic16x")
    a = face[0].numpy().reshape(3, 8, 16, 8, 16).mean(axis=(2, 4))
    ref = np.repeat(np.repeat(a, 16, axis=1), 16, axis=2)
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-5)


def _bivariate_gaussian(k: dict) -> np.ndarray:
    """BasicSR's bivariate Gaussian kernel, written from its definition (numpy)."""
    ax = np.arange(41) - 20.0
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(k["theta"]), math.sin(k["theta"])
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([k["sigma_x"] ** 2, k["sigma_y"] ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    q = inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy
    ker = np.exp(-0.5 * q)
    return ker / ker.sum()


def _opencv_pipeline(img: np.ndarray, rec: dict) -> np.ndarray:
    """BasicSR/GFPGAN's FFHQDegradationDataset steps with OpenCV (RGB float32 HWC in [0, 1]), no noise."""
    blur, down, _, jp, back, _ = rec["ops"]
    out = cv2.filter2D(img, -1, _bivariate_gaussian(blur["kernel"]).astype(np.float32))
    out = cv2.resize(out, tuple(down["size"][::-1]), interpolation=cv2.INTER_LINEAR)
    out = np.clip(out, 0, 1)
    _, buf = cv2.imencode(
        ".jpg", (out[:, :, ::-1] * 255.0).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, jp["quality"]]
    )
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0
    out = cv2.resize(out, tuple(back["size"][::-1]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.round(out * 255.0), 0, 255) / 255.0


def test_realworld_matches_opencv_reference(face):
    x = torch.cat([face, face.flip(-1), face.flip(-2), face.transpose(-1, -2)])
    _, params = degrade.apply(x, "realworld-gfpgan", generator=3)
    for rec in params:
        rec["ops"][2]["sigma"] = 0.0  # the noise field differs from numpy's; its range is tested above
    y, _ = degrade.apply(x, "realworld-gfpgan", params=params)
    for i, rec in enumerate(params):
        ref = _opencv_pipeline(np.ascontiguousarray(x[i].permute(1, 2, 0).numpy()), rec)
        diff = np.abs(y[i].permute(1, 2, 0).numpy() - ref)
        assert diff.mean() < 0.25 / 255, (i, diff.mean() * 255)


def test_robust_denoise_statistics():
    x = torch.full((1, 3, 128, 128), 0.5)
    y, _ = degrade.apply(x, "robust-denoise", level="S", generator=0)  # photons 48, p 0.08
    dead = (y == 0).all(dim=1)
    # P(all channels 0) = p + (1 - p) P(Poisson(24) = 0)^3, the second term negligible
    assert _binomial_ok(int(dead.sum()), 128 * 128, 0.08)
    alive = y.permute(0, 2, 3, 1)[~dead]
    assert abs(float(alive.mean()) - 0.5) < 0.01
    assert abs(float(alive.var()) - 0.5 / 48) < 0.1 * 0.5 / 48  # Poisson(x k)/k: variance x / k
    assert torch.allclose(alive * 48, (alive * 48).round(), atol=1e-4)  # counts / photons


# ----------------------------------------------------------------------------------------------- surrogates


@pytest.mark.parametrize("level", ["XS", "M", "XL"])
def test_upsample_surrogate_close_to_real(face, level):
    x = torch.nn.functional.interpolate(face, size=(256, 256), mode="bicubic", align_corners=False).clamp(0, 1)
    y, params = degrade.apply(x, "robust-upsample", level=level, generator=1)
    f_hat = degrade.surrogate("robust-upsample", params)
    z = f_hat(x)
    assert z.shape == y.shape
    assert float((z - y).abs().mean()) < 0.03
    f = 256 // y.shape[-1]
    torch.testing.assert_close(z, torch.nn.functional.avg_pool2d(x, f))


def test_upsample_surrogate_stays_aligned_when_the_size_is_not_a_multiple():
    """250 px at x8 (M): the real resize maps all 250 rows onto 31; the surrogate's windows must tile the whole
    image too (avg_pool2d dropped the last 2 rows and shifted the target by an eighth of a low-res pixel)."""
    ramp = torch.linspace(0, 1, 250).view(1, 1, 1, 250).expand(1, 3, 250, 250).contiguous()
    y, params = degrade.apply(ramp, "robust-upsample", level="M", generator=1)
    z = degrade.surrogate("robust-upsample", params)(ramp)
    f = params[0]["ops"][0]["factor"]
    assert z.shape == y.shape == (1, 3, 250 // f, 250 // f)
    assert float((z - y).abs().mean()) < 0.4 / 255  # within the real output's 8-bit rounding
    err = (z - y).mean((0, 1, 2))
    assert abs(float(err[:15].mean() + err[-15:].mean())) < 0.1 / 255  # no drift from one side to the other
    dropped = torch.nn.functional.avg_pool2d(ramp, f)
    assert float((dropped - y).abs().mean()) > 0.8 / 255  # what the old surrogate gave


@pytest.mark.parametrize("level", ["XS", "M", "XL"])
def test_deartifact_surrogate_within_2_levels(face, level):
    y, params = degrade.apply(face, "robust-deartifact", level=level)
    z = degrade.surrogate("robust-deartifact", params)(face)
    assert float((z - y).abs().mean()) < 2 / 255


def test_inpaint_surrogate_is_the_known_mask(face):
    y, params = degrade.apply(face, "robust-inpaint", level="XS", generator=2)
    assert (y == 0).any()
    torch.testing.assert_close(degrade.surrogate("robust-inpaint", params)(face), y)


def test_composition_surrogate_chains_singles(face):
    task = "robust-upsample+deartifact"
    _, params = degrade.apply(face, task, generator=4)
    z = degrade.surrogate(task, params)(face)
    ref = degrade.diff_jpeg(torch.nn.functional.avg_pool2d(face, 8), 12, subsampling="4:2:2")
    torch.testing.assert_close(z, ref)


def test_denoise_surrogate_statistics_and_fresh_noise():
    x = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)
    _, params = degrade.apply(x.detach(), "robust-denoise", level="M", generator=0)  # photons 24, p .16
    f_hat = degrade.surrogate("robust-denoise", params)
    z1, z2 = f_hat(x), f_hat(x)
    assert not torch.equal(z1, z2)  # a fresh field and mask per call
    alive = z1.detach()[(z1 != 0).all(dim=1, keepdim=True).expand_as(z1)]
    # Gaussian approximation: mean (x k - 1/2) / k, std sqrt(x k) / k
    assert abs(float(alive.mean()) - (12 - 0.5) / 24) < 0.01
    assert abs(float(alive.std()) - math.sqrt(12) / 24) < 0.02
    z1.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = degrade.surrogate("robust-denoise", params)
    assert torch.equal(again(x), z1)  # reproducible from the record


def test_rls_surrogate_is_the_bicubic_operator(face):
    for task in ("rls-x8", "rls-x16-gaussian-noise", "rls-motion-blur-x16"):
        y, params = degrade.apply(face, task, generator=0)
        z = degrade.surrogate(task, params)(face)
        torch.testing.assert_close(z, degrade.downsample_pulse_bicubic(face, 8 if task == "rls-x8" else 16))
        if task == "rls-x8":
            torch.testing.assert_close(z.clamp(0, 1), y)


def test_realworld_surrogate_close_to_real(face):
    y, params = degrade.apply(face, "realworld-gfpgan", generator=5)
    z = degrade.surrogate("realworld-gfpgan", params)(face)
    assert float((z - y).abs().mean()) < 2 / 255


@pytest.mark.parametrize("task", ["rls-x8", "mfpsnet-blur", "sr4x-code", "mosaic16x"])
def test_surrogate_gradcheck(task):
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4
    _, params = degrade.apply(x, task, generator=0)
    f_hat = degrade.surrogate(task, params)
    assert torch.autograd.gradcheck(f_hat, (x.requires_grad_(True),), eps=1e-6, atol=1e-5, fast_mode=True)


def test_surrogate_checks_size(face):
    _, params = degrade.apply(face, "sr4x")
    with pytest.raises(InputError):
        degrade.surrogate("sr4x", params)(face[:, :, :64, :64])


# ----------------------------------------------------------------------------------------------- fast paths


def test_good_fft_size_brute_force():
    def smooth(n):
        for p in (2, 3, 5, 7):
            while n % p == 0:
                n //= p
        return n == 1

    sizes = {n: T._good_fft_size(n) for n in range(1, 700)}
    assert all(sizes[n] == next(m for m in itertools.count(n) if smooth(m)) for n in sizes)
    assert sizes[552] == 560 and sizes[513] == 525


@pytest.mark.parametrize("seed", range(6))
def test_fast_paths_equal_primitives(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 96, 80, generator=g)
    k, _ = degrade.random_kernel(g, 41, ("iso", "aniso"), sigma_range=(0.1, 10))
    s = 0.8 + 7.2 * float(torch.rand((), generator=g))
    size = (max(1, int(96 // s)), max(1, int(80 // s)))
    ref = degrade.resize(degrade.blur(x, k), size=size, method="bilinear", antialias=False)
    fused = T._fused_blur_resize(x, k, size, "bilinear", False)
    torch.testing.assert_close(fused, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(T._fft_blur(x, k[None]), degrade.blur(x, k), atol=2e-5, rtol=0)


def test_fast_engine_matches_slow_engine(face, monkeypatch):
    x = torch.cat([face, face.flip(-1)] * 2)
    y, params = degrade.apply(x, "realworld-gfpgan", generator=11)
    monkeypatch.setattr(T, "_FAST", False)
    y_slow, _ = degrade.apply(x, "realworld-gfpgan", params=params)
    # equal up to float rounding, which may flip an 8-bit rounding (or a JPEG coefficient) somewhere
    assert float((y - y_slow).abs().mean()) < 0.05 / 255


@pytest.mark.parametrize("src,dst", [((97, 61), (512, 384)), ((512, 512), (77, 91)), ((640, 600), (512, 512))])
def test_fast_bilinear_equals_primitive(src, dst):
    x = torch.rand(2, 3, *src, generator=torch.Generator().manual_seed(1))
    ref = degrade.resize(x, size=dst, method="bilinear", antialias=False)
    torch.testing.assert_close(T._fast_bilinear(x, dst, False), ref, atol=1e-5, rtol=0)  # OpenCV path
    torch.testing.assert_close(T._fast_bilinear(x.double(), dst, False), ref.double(), atol=1e-4, rtol=0)  # torch
    q = T._fast_bilinear(x, dst, False, bits=8)
    assert float((q - T._quantize(ref, 8)).abs().max()) <= 1 / 255 + 1e-6
    assert float((q - T._quantize(ref, 8)).abs().mean()) < 1e-4
    assert torch.equal(q, torch.round(q * 255) / 255)


def test_ispl_motion_blur_kernels_are_odd_and_leave_the_image_in_place():
    """imgaug's MotionBlur (the authors' degrade.py) makes k odd: an even k x k line kernel is centred between
    pixels, so half the draws shifted the LQ by half a pixel against its ground truth."""
    from facerestore.degrade.presets.ispl import blur_op

    ops = [blur_op(torch.Generator().manual_seed(s)) for s in range(60)]
    motion = [o for o in ops if o["kernel"]["kind"] == "motion"]
    assert len(motion) > 10 and all(o["kernel"]["size"] % 2 == 1 for o in motion)
    assert {o["kernel"]["size"] for o in motion} <= set(range(11, 22, 2))
    x = torch.zeros(1, 3, 41, 41, dtype=torch.float64)
    x[..., 20, 20] = 1.0
    yy, xx = torch.meshgrid(torch.arange(41.0, dtype=torch.float64), torch.arange(41.0, dtype=torch.float64),
                            indexing="ij")
    for o in motion[:12]:
        y = degrade.tasks._run(x, [[o]])[0, 0]
        cy, cx = float((y * yy).sum() / y.sum()), float((y * xx).sum() / y.sum())
        assert abs(cy - 20) < 0.05 and abs(cx - 20) < 0.05, o  # the blur stays centred on the pixel


def test_malformed_records_and_images_smaller_than_the_factor_are_one_line_errors():
    import copy

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _, recs = degrade.apply(x, "robust-upsample", level="S", generator=0)
    missing = copy.deepcopy(recs)
    del missing[0]["ops"][0]["size"]
    with pytest.raises(InputError, match="lacks the key 'size'"):
        degrade.apply(x, "robust-upsample", params=missing)
    with pytest.raises(InputError, match="lacks the key 'size'"):
        degrade.surrogate("robust-upsample", missing)(x)
    unknown = copy.deepcopy(recs)
    unknown[0]["ops"][0]["op"] = "sharpen"
    with pytest.raises(InputError, match="unknown op 'sharpen'"):  # surrogate() raised a KeyError
        degrade.surrogate("robust-upsample", unknown)
    with pytest.raises(InputError, match="smaller than the x32 downsampling"):  # "internal error" before
        degrade.apply(torch.rand(1, 3, 24, 24), "robust-upsample", level="XL", generator=0)
