"""The method platform: registry-driven contracts (pyiqa style) for every restorer, metric and degradation task,
and a toy method added on a copy of the registry without touching the package.

Each registered item runs on a small input; the checks are the contract every caller relies on: output
shape, range [0, 1], the caller's dtype and device back, determinism, reduced precision as the spec says,
and for degradation surrogates a float64 gradient check.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from facerestore import degrade, metrics
from facerestore.cli import main
from facerestore.errors import InputError, WeightsMissingError
from facerestore.methods import REGISTRY, MethodSpec, Restorer, list_restorers, load_restorer

# --------------------------------------------------------------------------------------------- restorers

# the smallest run of each optimisation method that exercises every phase (the contract, not the quality), on
# the built-in 64 px prior (the 1024 px MobileStyleGAN default is covered by tests/nn/test_mobilestylegan.py)
_PRIOR64 = "builtin:stylegan2-face-64.safetensors"
FAST_OPTIONS = {
    "robust-inversion": {"steps": (2, 2, 2), "loss": "substitute", "weights": _PRIOR64},
    "rls": {"steps": 2, "n_mean": 64, "weights": _PRIOR64},
    "rls-plus": {"steps": 2, "plus_steps": 2, "n_mean": 64, "weights": _PRIOR64},
}


def _load(name: str) -> Restorer:
    import importlib.util

    if name == "honestface" and importlib.util.find_spec("diffusers") is None:
        pytest.skip("honestface needs the [diffusion] extra (diffusers, peft)")
    options = dict(FAST_OPTIONS.get(name, {}))
    weights = options.pop("weights", None)
    try:
        return load_restorer(name, weights=weights, **options)
    except WeightsMissingError as exc:
        if str(weights or "").startswith("builtin:"):  # shipped in the tree: not a reason to skip
            raise
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_restorer_keeps_the_contract(name):
    r = _load(name)
    spec = r.spec
    assert spec.name == name and isinstance(r, Restorer)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # 32 divides RLS's 64 px prior
    # crops in, crops out at the asked size: what the photo pipeline relies on
    y = r.restore(x, size=(32, 32))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and torch.isfinite(y).all()
    # without size: the input's size ("input") or the model's own size ("model")
    y_native = r.restore(x)
    side = 32 if spec.output == "input" else spec.size
    assert y_native.shape == (2, 3, side, side)
    # deterministic, and the caller's dtype comes back
    torch.testing.assert_close(r.restore(x, size=(32, 32)), y, rtol=0, atol=0)
    y64 = r.restore(x.double(), size=(32, 32))
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=0, atol=1e-6)
    # the arguments every method checks the same way
    with pytest.raises(InputError):
        r.restore(x[:, :1])
    if not spec.supports_fidelity:
        with pytest.raises(InputError, match="no fidelity control"):
            r.restore(x, fidelity=0.5)
    else:
        with pytest.raises(InputError, match=r"\[0, 1\]"):
            r.restore(x, fidelity=1.5)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_restorer_half_means_one_thing(name):
    r = _load(name)
    if "bf16" not in r.spec.precisions:
        with pytest.raises(InputError, match="half precision"):
            r.set_half(True)
        return
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if r.spec.unsupervised:
        # projections onto a face prior get a face: on a noise target NGD's fixed-length steps follow a direction
        # the noise dominates, so any rounding sends the path elsewhere (robust-inversion: 0.07 mean difference);
        # on the prior's own face or a real one, bf16 changes the result as much as it changes G's forward (0.003)
        from facerestore.nn.stylegan2 import to_unit_range

        with torch.no_grad():
            face = to_unit_range(r.G.synthesis(r.G.sample_w(1, torch.Generator().manual_seed(5)))).clamp(0, 1)
        x = torch.nn.functional.interpolate(face, size=(32, 32), mode="area")
    ref = r.restore(x, size=(32, 32))
    r.set_half(True)
    assert r.dtype == torch.bfloat16 and r.precision == "bf16"  # bf16 on the CPU (fp16 on CUDA/MPS)
    y = r.restore(x, size=(32, 32))
    assert y.dtype == torch.float32 and float((y - ref).abs().mean()) < 0.02
    r.set_half(False)
    assert r.dtype == torch.float32


def test_every_spec_field_is_consistent():
    names = [s.name for s in list_restorers()]
    assert len(names) == len(set(names))
    for s in list_restorers():
        assert s.paper in {"000", "001", "002", "003", "004", "ours"} and s.description and s.weights_licence
        assert "fp32" in s.precisions and s.output in ("input", "model")
        refs = (s.weights,) if isinstance(s.weights, str) else s.weights or ()
        for ref in refs:  # every default resolves (built-in) or names a zoo entry; the last one is always there
            from facerestore import zoo
            from facerestore.zoo.refs import BUILTIN_PREFIX, resolve_weights

            if ref.startswith(BUILTIN_PREFIX):
                assert resolve_weights(ref).is_file()
            else:
                assert zoo.has_entry(ref)
        assert not refs or refs[-1].startswith(BUILTIN_PREFIX) or s.name == "ispl"


class ToyRestorer(Restorer):
    """Inverts colours: a folder-less method declared entirely by its spec and its network call."""

    spec = MethodSpec("toy-invert", "000", "colour inversion (a test method)", size=48, supports_fidelity=True,
                      precisions=("fp32", "bf16"), weights_licence="none (test)", trained_on=("none",))

    def __init__(self, weights=None) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def _restore(self, x, *, fidelity, refs):
        self.calls.append((tuple(x.shape), x.dtype, fidelity))
        f = 1.0 if fidelity is None else fidelity
        return f * (1 - x) + (1 - f) * x


def test_toy_method_needs_nothing_but_its_spec(monkeypatch, tmp_path, astronaut_path, capsys):
    from facerestore import pipeline
    from facerestore.methods import registry

    reg = REGISTRY.with_restorer(ToyRestorer)
    assert "toy-invert" in reg.names() and "toy-invert" not in REGISTRY.names()  # the package list is untouched
    with pytest.raises(ValueError, match="duplicate"):
        reg.with_restorer(ToyRestorer)
    monkeypatch.setattr(registry, "REGISTRY", reg)
    monkeypatch.setattr(pipeline, "_RESTORERS", {})

    toy = load_restorer("toy-invert")
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    y = toy.restore(x, fidelity=1.0)
    assert toy.calls[-1] == ((1, 3, 48, 48), torch.float32, 1.0)  # resized to the spec's size by the wrapper
    assert y.shape == x.shape
    # the wrapper's round trip (area down, bicubic up) of the inverted image
    from facerestore.methods import resize_crop

    torch.testing.assert_close(y, resize_crop(1 - resize_crop(x, (48, 48)), (96, 96)))

    # the whole photo pipeline and the CLI find it by name
    res = pipeline.restore_photo(astronaut_path, "toy-invert", upscale=1, fidelity=0.5, identity=False)
    assert res.method == "toy-invert" and res.to_json()["restorer"]["weights_licence"] == "none (test)"
    assert main(["restore", "--list-methods"]) == 0
    assert "toy-invert" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["restore", "-i", str(astronaut_path), "-o", str(out), "--method", "toy-invert", "--upscale", "1",
                 "--device", "cpu", "-q", "--half"]) == 0
    record = json.loads(next((out / "restored_imgs").glob("*.json")).read_text())
    assert record["method"] == "toy-invert" and record["restorer"]["precision"] == "bf16"


# --------------------------------------------------------------------------------------------- metrics


def _face_pair(astronaut_tensor):
    from facerestore.methods import resize_crop

    hq = resize_crop(astronaut_tensor[:, :, 20:276, 130:386], (192, 192))  # MS-SSIM, NIQE need >= 176 px
    lq = (hq + 0.03 * torch.randn(hq.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return lq, hq


@pytest.mark.parametrize("name", metrics.list_metrics())
def test_every_metric_keeps_the_contract(name, astronaut_tensor):
    spec = metrics.get_spec(name)
    try:
        m = metrics.create(name)
    except WeightsMissingError as exc:
        pytest.skip(f"{name}: {exc}")
    lq, hq = _face_pair(astronaut_tensor)
    pred = torch.cat([lq, hq])
    ref = torch.cat([hq, hq])
    if spec.kind == "distribution":
        pytest.skip(f"{name}: distribution metrics need many images (tests/metrics/test_fid.py covers them)")
    args = (pred, ref) if spec.needs_reference else (pred,)
    s = m(*args)
    assert s.shape == (2,) and s.dtype.is_floating_point
    lo, hi = spec.score_range
    vals = [v for v in s.tolist() if not math.isnan(v)]
    assert vals and all(lo - 1e-6 <= v <= hi + 1e-6 for v in vals), (name, vals)
    torch.testing.assert_close(m(*args), s, rtol=0, atol=0, equal_nan=True)  # deterministic
    if spec.needs_reference:
        # a perfect prediction scores at least as well as a degraded one
        better = min if spec.lower_better else max
        assert better(s[0].item(), s[1].item()) == s[1].item() or math.isclose(s[0].item(), s[1].item()), (name, s)


# ----------------------------------------------------------------------------------------- degradations

ALL_TASKS = [t.name for t in degrade.list_tasks()]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_task_keeps_the_contract(task):
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    y, params = degrade.apply(x, task, generator=5)
    assert y.dtype == torch.float64 and y.shape[:2] == x.shape[:2]
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and torch.isfinite(y).all()
    y2, params2 = degrade.apply(x, task, generator=5)
    assert torch.equal(y, y2) and params == params2  # seeded
    assert torch.equal(degrade.apply(x, task, params=json.loads(json.dumps(params)))[0], y)  # replay from JSON


@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_surrogate_has_true_gradients(task):
    """float64 gradcheck of f_hat; straight-through surrogates (rounding, JPEG, clamps) are checked for finite,
    non-zero gradients instead, since their backward is by design not the forward's derivative."""
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.6 + 0.2
    _, params = degrade.apply(x, task, generator=6)
    ops = {op["op"] for rec in params for op in rec["ops"]}

    def f_hat(z):  # rebuilt per call: stochastic surrogates then draw the same noise every time
        return degrade.surrogate(task, params)(z)

    xg = x.clone().requires_grad_(True)
    if ops & STRAIGHT_THROUGH:
        g = torch.autograd.grad(f_hat(xg).sum(), xg)[0]
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    else:
        assert torch.autograd.gradcheck(f_hat, (xg,), eps=1e-6, atol=1e-5, fast_mode=True)


# ops whose surrogate is a straight-through estimate (forward exact, backward smooth): the clamp of noise and
# colour ops (``degrade.clamp_surrogate``), JPEG and quantisation (``cubic_round``), salt-and-pepper and dead
# pixels (known-mask replacement)
STRAIGHT_THROUGH = {"gaussian_noise", "laplacian_noise", "random_sign_poisson_noise", "poisson_dead_pixels",
                    "salt_and_pepper", "jpeg", "quantize", "color_shift", "adjust_color"}


def test_registry_lists_exactly_the_issue_methods():
    assert set(REGISTRY.names()) == {"ispl", "hifacegan", "robust-inversion", "rls", "rls-plus", "mfpsnet",
                                     "honestface", "prior-sft"}
    assert np.all([isinstance(s, MethodSpec) for s in list_restorers()])


def test_every_licence_of_weights_trained_on_ffhq_says_non_commercial():
    """restore --list-methods, the web page and every output record show spec.weights_licence: weights trained on
    FFHQ (CC BY-NC-SA) or on the FFHQ-derived priors must say what their model cards say, for every part."""
    from facerestore.methods.registry import list_restorers

    for spec in list_restorers():
        text = spec.weights_licence or ""
        if "FFHQ" not in text:
            continue
        parts = [p for p in text.split(";") if "FFHQ" in p]  # each component (encoder, decoder, fallback prior)
        assert all("non-commercial" in p for p in parts), (spec.name, text)


def test_restore_refuses_bad_sizes_integer_images_and_unknown_options_in_one_line():
    import torch

    from facerestore.errors import InputError
    from facerestore.methods.registry import load_restorer

    r = load_restorer("ispl")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for size in (64, (0, 64), (-3, 5), (32.5, 32)):  # silently empty, a TypeError, a pooling error before
        with pytest.raises(InputError, match="size must be an"):
            r.restore(x, size=size)
    with pytest.raises(InputError, match="floating-point"):  # 0..255 read as [0, 1]: a black-and-white mask
        r.restore((x * 255).to(torch.uint8))
    with pytest.raises(InputError, match="unexpected keyword argument 'foo'"):
        r.restore(x, foo=1)
    assert r.restore(x, size=(24, 40)).shape == (1, 3, 24, 40)
