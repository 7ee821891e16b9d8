"""StyleGAN2 loaders (nn/stylegan2_io.py): upstream name/shape tables, layout equivalence, an independent
rosinality-semantics reference forward, and the restricted unpickler (tensors out, code never run)."""

from __future__ import annotations

import builtins
import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facerestore.errors import InputError, WeightsMissingError
from facerestore.nn.stylegan2 import Generator
from facerestore.nn.stylegan2_io import (
    PersistentObject,
    UnsafePickleError,
    config_from_state_dict,
    generator_from_nvidia,
    generator_from_rosinality,
    load_nvidia_pkl,
    load_rosinality_pt,
    load_stylegan2,
    load_zoo_generator,
    nvidia_to_ours,
    read_nvidia_pickle,
    rosinality_to_ours,
)

# --------------------------------------------------------------------------------------------------
# Upstream layouts, written from the upstream module definitions (not from our code)
# --------------------------------------------------------------------------------------------------

_FIR = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


def _nvidia_shapes(res=1024, z_dim=512, w_dim=512, n_map=8, cbase=32768, cmax=512, img_ch=3) -> dict:
    """stylegan2-ada-pytorch training/networks.py Generator (architecture 'skip'): name -> shape.

    MappingNetwork: fc{i} FullyConnectedLayer (weight [out, in], bias [out]) + buffer w_avg [w_dim].
    SynthesisBlock b{res}: const [C, 4, 4] (first block) or conv0 (up=2); conv1; torgb; buffer
    resample_filter [4, 4]. SynthesisLayer: affine (FC w_dim -> in), weight [out, in, 3, 3], noise_const
    [res, res], noise_strength [], bias [out], buffer resample_filter. ToRGBLayer: affine, weight
    [img_ch, in, 1, 1], bias [img_ch].
    """
    s = {}
    for i in range(n_map):
        s[f"mapping.fc{i}.weight"] = (w_dim, z_dim if i == 0 else w_dim)
        s[f"mapping.fc{i}.bias"] = (w_dim,)
    s["mapping.w_avg"] = (w_dim,)
    ch = lambda r: min(cbase // r, cmax)  # noqa: E731
    for k in range(2, int(math.log2(res)) + 1):
        r = 2**k
        p = f"synthesis.b{r}"
        s[f"{p}.resample_filter"] = (4, 4)
        convs = [("conv1", ch(r))] if r == 4 else [("conv0", ch(r // 2)), ("conv1", ch(r))]
        if r == 4:
            s[f"{p}.const"] = (ch(4), 4, 4)
        for name, cin in convs:
            s[f"{p}.{name}.resample_filter"] = (4, 4)
            s[f"{p}.{name}.affine.weight"] = (cin, w_dim)
            s[f"{p}.{name}.affine.bias"] = (cin,)
            s[f"{p}.{name}.weight"] = (ch(r), cin, 3, 3)
            s[f"{p}.{name}.noise_const"] = (r, r)
            s[f"{p}.{name}.noise_strength"] = ()
            s[f"{p}.{name}.bias"] = (ch(r),)
        s[f"{p}.torgb.affine.weight"] = (ch(r), w_dim)
        s[f"{p}.torgb.affine.bias"] = (ch(r),)
        s[f"{p}.torgb.weight"] = (img_ch, ch(r), 1, 1)
        s[f"{p}.torgb.bias"] = (img_ch,)
    return s


def _rosinality_shapes(size=1024, style_dim=512, n_mlp=8, channels=None) -> dict:
    """rosinality/stylegan2-pytorch model.py Generator: name -> shape.

    style.{1..n_mlp} EqualLinear; input.input [1, C4, 4, 4]; conv1 / convs.N StyledConv (conv.weight
    [1, out, in, k, k], conv.modulation EqualLinear(style_dim -> in), noise.weight [1], activate.bias
    [out], up-convs also conv.blur.kernel [4, 4]); to_rgb1 / to_rgbs.N ToRGB (conv.weight [1, 3, in, 1, 1],
    bias [1, 3, 1, 1], to_rgbs also upsample.kernel [4, 4]); noises.noise_i [1, 1, 2^r, 2^r] with
    r = (i + 5) // 2 for i < num_layers = (log2(size) - 2) * 2 + 1.
    """
    if channels is None:
        channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    s = {}
    for i in range(1, n_mlp + 1):
        s[f"style.{i}.weight"] = (style_dim, style_dim)
        s[f"style.{i}.bias"] = (style_dim,)
    s["input.input"] = (1, channels[4], 4, 4)

    def styled(p, cin, cout, up):
        s[f"{p}.conv.weight"] = (1, cout, cin, 3, 3)
        s[f"{p}.conv.modulation.weight"] = (cin, style_dim)
        s[f"{p}.conv.modulation.bias"] = (cin,)
        if up:
            s[f"{p}.conv.blur.kernel"] = (4, 4)
        s[f"{p}.noise.weight"] = (1,)
        s[f"{p}.activate.bias"] = (cout,)

    def rgb(p, cin, up):
        if up:
            s[f"{p}.upsample.kernel"] = (4, 4)
        s[f"{p}.conv.weight"] = (1, 3, cin, 1, 1)
        s[f"{p}.conv.modulation.weight"] = (cin, style_dim)
        s[f"{p}.conv.modulation.bias"] = (cin,)
        s[f"{p}.bias"] = (1, 3, 1, 1)

    styled("conv1", channels[4], channels[4], False)
    rgb("to_rgb1", channels[4], False)
    log_size = int(math.log2(size))
    cin = channels[4]
    for i in range(3, log_size + 1):
        cout = channels[2**i]
        styled(f"convs.{2 * (i - 3)}", cin, cout, True)
        styled(f"convs.{2 * (i - 3) + 1}", cout, cout, False)
        rgb(f"to_rgbs.{i - 3}", cout, True)
        cin = cout
    for i in range((log_size - 2) * 2 + 1):
        r = (i + 5) // 2
        s[f"noises.noise_{i}"] = (1, 1, 2**r, 2**r)
    return s


def _meta_dict(shapes: dict, fir_keys=("resample_filter", "kernel")) -> dict:
    return {k: (_FIR * (4 if k.endswith("kernel") else 1) if k.endswith(fir_keys) else
                torch.empty(v, device="meta")) for k, v in shapes.items()}


def _table(sd: dict) -> dict:
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.fixture(scope="module")
def ffhq_meta_generator() -> Generator:
    # Built on the meta device (no memory, no init); the first meta use costs a few seconds of imports.
    with torch.device("meta"):
        return Generator()


def test_ffhq_1024_nvidia_layout_loads_strictly(ffhq_meta_generator):
    ours = nvidia_to_ours(_meta_dict(_nvidia_shapes()))
    cfg = config_from_state_dict(ours)
    assert cfg == {"z_dim": 512, "w_dim": 512, "img_resolution": 1024, "img_channels": 3, "mapping_layers": 8,
                   "channel_base": 32768, "channel_max": 512, "use_noise": True}
    G = ffhq_meta_generator
    assert {k: G.config[k] for k in cfg} == cfg
    assert _table(ours) == _table(G.state_dict())
    G.load_state_dict(ours, strict=True)


def test_ffhq_1024_rosinality_layout_loads_strictly(ffhq_meta_generator):
    ros = _meta_dict(_rosinality_shapes())
    ours = rosinality_to_ours(ros, latent_avg=torch.empty(512, device="meta"))
    G = ffhq_meta_generator
    assert _table(ours) == _table(G.state_dict())
    assert _table(ours) == _table(nvidia_to_ours(_meta_dict(_nvidia_shapes())))
    G.load_state_dict(ours, strict=True)


# --------------------------------------------------------------------------------------------------
# Small config: same random weights in both layouts
# --------------------------------------------------------------------------------------------------

_SMALL = {"size": 16, "style_dim": 16, "n_mlp": 2, "channels": {4: 16, 8: 16, 16: 8}}


def _random_rosinality(seed=0) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in _rosinality_shapes(**_SMALL).items():
        if k.endswith("kernel"):
            sd[k] = _FIR * 4
        elif k.endswith("noise.weight"):
            sd[k] = 0.2 + 0.1 * torch.rand(shape, generator=g)
        elif k.endswith("modulation.bias"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[k] = torch.randn(shape, generator=g) * (0.1 if "bias" in k else 1.0)
    return sd, torch.randn(16, generator=g)


def _nvidia_from_rosinality(ros: dict, latent_avg: torch.Tensor) -> dict:
    """Explicit name correspondence (as written for this test, independently of the loader)."""
    nv = {"mapping.w_avg": latent_avg.clone(), "synthesis.b4.const": ros["input.input"][0]}
    for i in range(_SMALL["n_mlp"]):
        nv[f"mapping.fc{i}.weight"] = ros[f"style.{i + 1}.weight"]
        nv[f"mapping.fc{i}.bias"] = ros[f"style.{i + 1}.bias"]

    def conv(dst, src, noise_idx):
        nv[f"{dst}.weight"] = ros[f"{src}.conv.weight"][0]
        nv[f"{dst}.affine.weight"] = ros[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = ros[f"{src}.conv.modulation.bias"]
        nv[f"{dst}.noise_strength"] = ros[f"{src}.noise.weight"][0]
        nv[f"{dst}.noise_const"] = ros[f"noises.noise_{noise_idx}"][0, 0]
        nv[f"{dst}.bias"] = ros[f"{src}.activate.bias"]
        nv[f"{dst}.resample_filter"] = _FIR

    def rgb(dst, src):
        nv[f"{dst}.weight"] = ros[f"{src}.conv.weight"][0]
        nv[f"{dst}.affine.weight"] = ros[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = ros[f"{src}.conv.modulation.bias"]
        nv[f"{dst}.bias"] = ros[f"{src}.bias"].reshape(3)

    conv("synthesis.b4.conv1", "conv1", 0)
    rgb("synthesis.b4.torgb", "to_rgb1")
    nv["synthesis.b4.resample_filter"] = _FIR
    for j, r in enumerate([8, 16]):
        conv(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1)
        conv(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        rgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
        nv[f"synthesis.b{r}.resample_filter"] = _FIR
    return nv


def _init_kwargs(**over):
    kw = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 16, "img_channels": 3,
          "mapping_kwargs": {"num_layers": 2},
          "synthesis_kwargs": {"channel_base": 128, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": None}}
    kw.update(over)
    return kw


def _rosinality_reference(sd: dict, z: torch.Tensor, truncation: float, latent_avg: torch.Tensor) -> torch.Tensor:
    """Direct transcription of rosinality's forward semantics (per-sample loops, 2-D blur kernels)."""
    sq2 = math.sqrt(2.0)

    def lrelu(x):
        return F.leaky_relu(x, 0.2) * sq2

    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for i in range(1, _SMALL["n_mlp"] + 1):
        w, b = sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]
        x = lrelu(F.linear(x, w * (0.01 / math.sqrt(w.shape[1]))) + b * 0.01)
    lat = latent_avg + truncation * (x - latent_avg)

    def fir(x, kernel, up, pad0, pad1):
        c = x.shape[1]
        if up > 1:
            xu = x.new_zeros(x.shape[0], c, x.shape[2] * up, x.shape[3] * up)
            xu[:, :, ::up, ::up] = x
            x = xu
        x = F.pad(x, (pad0, pad1, pad0, pad1))
        return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)

    def modconv(x, p, style, demod, upsample):
        w = sd[f"{p}.conv.weight"][0]
        w = w / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])
        mw = sd[f"{p}.conv.modulation.weight"]
        s = F.linear(style, mw / math.sqrt(mw.shape[1])) + sd[f"{p}.conv.modulation.bias"]
        outs = []
        for b in range(x.shape[0]):
            wb = w * s[b][None, :, None, None]
            if demod:
                wb = wb * torch.rsqrt(wb.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
            if upsample:
                y = F.conv_transpose2d(x[b : b + 1], wb.transpose(0, 1), stride=2)
                y = fir(y, sd[f"{p}.conv.blur.kernel"], 1, 1, 1)
            else:
                y = F.conv2d(x[b : b + 1], wb, padding=w.shape[-1] // 2)
            outs.append(y)
        return torch.cat(outs)

    def styled(x, p, style, noise, upsample):
        out = modconv(x, p, style, True, upsample) + sd[f"{p}.noise.weight"] * noise
        return lrelu(out + sd[f"{p}.activate.bias"][None, :, None, None])

    def to_rgb(x, p, style, skip):
        out = modconv(x, p, style, False, False) + sd[f"{p}.bias"]
        if skip is not None:
            out = out + fir(skip, sd[f"{p}.upsample.kernel"], 2, 2, 1)
        return out

    out = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = styled(out, "conv1", lat, sd["noises.noise_0"], False)
    skip = to_rgb(out, "to_rgb1", lat, None)
    for j in range(2):
        out = styled(out, f"convs.{2 * j}", lat, sd[f"noises.noise_{2 * j + 1}"], True)
        out = styled(out, f"convs.{2 * j + 1}", lat, sd[f"noises.noise_{2 * j + 2}"], False)
        skip = to_rgb(out, f"to_rgbs.{j}", lat, skip)
    return skip


def test_rosinality_and_nvidia_layouts_give_identical_images_and_match_reference():
    ros, latent_avg = _random_rosinality()
    nv = _nvidia_from_rosinality(ros, latent_avg)
    G_r = generator_from_rosinality(ros, latent_avg)
    G_n = generator_from_nvidia(nv, _init_kwargs())
    assert G_n.config["channel_base"] == 128 and G_n.config["channel_max"] == 16
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img_r = G_r(z, truncation_psi=0.7)
        img_n = G_n(z, truncation_psi=0.7)
        ref = _rosinality_reference(ros, z, 0.7, latent_avg)
    assert img_r.shape == (3, 3, 16, 16)
    torch.testing.assert_close(img_r, img_n, rtol=0, atol=0)
    torch.testing.assert_close(img_r, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_conv_clamp_and_options_from_init_kwargs():
    ros, latent_avg = _random_rosinality()
    nv = _nvidia_from_rosinality(ros, latent_avg)
    kw = _init_kwargs(synthesis_kwargs={"channel_base": 128, "channel_max": 16, "conv_clamp": 256},
                      mapping_kwargs={"num_layers": 2, "lr_multiplier": 0.01, "w_avg_beta": 0.995})
    assert generator_from_nvidia(nv, kw).config["conv_clamp"] == 256
    with pytest.raises(InputError, match="conditional"):
        generator_from_nvidia(nv, _init_kwargs(c_dim=10))
    with pytest.raises(InputError, match="architecture"):
        generator_from_nvidia(nv, _init_kwargs(synthesis_kwargs={"architecture": "resnet"}))
    bad = dict(nv)
    bad["synthesis.b8.conv0.resample_filter"] = torch.ones(4, 4)
    with pytest.raises(InputError, match="filter"):
        generator_from_nvidia(bad)


def test_rosinality_errors_and_w_avg_estimate():
    ros, _ = _random_rosinality()
    with pytest.raises(InputError, match="unexpected keys"):
        rosinality_to_ours({**ros, "something.else": torch.zeros(1)})
    with pytest.raises(InputError, match="missing"):
        rosinality_to_ours({k: v for k, v in ros.items() if k != "input.input"})
    # No latent_avg: w_avg is the mean of mapped samples drawn with seed 0.
    G = generator_from_rosinality(ros, None, w_avg_samples=300)
    z = torch.randn((300, 16), generator=torch.Generator().manual_seed(0))
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for i in (1, 2):
        w, b = ros[f"style.{i}.weight"], ros[f"style.{i}.bias"]
        x = F.leaky_relu(F.linear(x, w * (0.01 / 4.0)) + b * 0.01, 0.2) * math.sqrt(2)
    torch.testing.assert_close(G.mapping.w_avg, x.mean(0), rtol=1e-5, atol=1e-6)


def test_rosinality_checkpoint_file_round_trip(tmp_path):
    ros, latent_avg = _random_rosinality()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": ros, "latent_avg": latent_avg}, path)
    G = load_stylegan2(path)
    ref = generator_from_rosinality(ros, latent_avg)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(G(z), ref(z), rtol=0, atol=0)
    assert not any(p.requires_grad for p in G.parameters())
    # A checkpoint holding arbitrary Python objects is refused by torch.load(weights_only=True).
    bad = tmp_path / "bad.pt"
    torch.save({"g_ema": ros, "extra": collections.Counter("abc"), "obj": types.SimpleNamespace(a=1)}, bad)
    with pytest.raises(InputError, match="weights-only"):
        load_rosinality_pt(bad)
    with pytest.raises(InputError, match="format"):
        load_stylegan2(tmp_path / "g.onnx")


# --------------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------------

_PAYLOAD_SRC = "import builtins\nbuiltins.FACERESTORE_PWNED = True\n"


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Fake ``torch_utils.persistence`` / ``dnnlib.util`` modules so that the test can *write* pickles
    referencing them, exactly as NVIDIA's persistent classes do (reduce -> _reconstruct_persistent_obj(meta))."""

    def _reconstruct_persistent_obj(meta):  # would exec meta['module_src'] in NVIDIA's code
        raise AssertionError("never called while writing")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = pers
    dn = types.ModuleType("dnnlib")
    du = types.ModuleType("dnnlib.util")
    du.EasyDict = EasyDict
    dn.util = du
    for name, mod in [("torch_utils", tu), ("torch_utils.persistence", pers), ("dnnlib", dn), ("dnnlib.util", du)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


class _Persistent:
    """Pickles like a torch_utils.persistence object: (reconstruct, (meta,)) with the module source inside."""

    reconstruct = None

    def __init__(self, class_name, state):
        self.class_name = class_name
        self.state = state

    def __reduce__(self):
        meta = {"type": "class", "version": 6, "module_src": _PAYLOAD_SRC, "class_name": self.class_name,
                "state": self.state}
        return (type(self).reconstruct, (meta,))


_CLASS_OF = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine": "FullyConnectedLayer",
             "conv0": "SynthesisLayer", "conv1": "SynthesisLayer", "torgb": "ToRGBLayer"}
_BUFFERS = ("w_avg", "noise_const", "resample_filter")


def _persistent_tree(sd: dict, easydict, init_kwargs: dict) -> _Persistent:
    """Nest a flat NVIDIA state dict into persistent-object states shaped like nn.Module.__dict__."""

    def node(class_name):
        return {"class": class_name, "params": collections.OrderedDict(), "buffers": collections.OrderedDict(),
                "children": collections.OrderedDict()}

    root = node("Generator")
    for key, value in sd.items():
        *path, leaf = key.split(".")
        cur = root
        for part in path:
            cls = _CLASS_OF.get(part) or ("SynthesisBlock" if part.startswith("b") else
                                          "FullyConnectedLayer" if part.startswith("fc") else "Module")
            cur = cur["children"].setdefault(part, node(cls))
        if leaf in _BUFFERS:
            cur["buffers"][leaf] = value.clone()
        else:
            cur["params"][leaf] = torch.nn.Parameter(value.clone(), requires_grad=False)

    def build(n, kwargs):
        state = {"training": False, "_parameters": n["params"], "_buffers": n["buffers"],
                 "_non_persistent_buffers_set": set(), "_backward_hooks": collections.OrderedDict(),
                 "_modules": collections.OrderedDict((k, build(c, {})) for k, c in n["children"].items()),
                 "_init_args": (), "_init_kwargs": kwargs}
        if n["class"] == "FullyConnectedLayer":
            state["weight_gain"] = np.float64(0.25)  # numpy scalars appear as plain attributes upstream
        return _Persistent(n["class"], state)

    return build(root, easydict(init_kwargs))


def _nvidia_pickle_bytes(nvidia_modules, sd: dict, init_kwargs: dict) -> bytes:
    _Persistent.reconstruct = nvidia_modules.reconstruct
    ez = nvidia_modules.EasyDict
    kw = ez({**init_kwargs, "mapping_kwargs": ez(init_kwargs["mapping_kwargs"]),
             "synthesis_kwargs": ez(init_kwargs["synthesis_kwargs"])})
    g_ema = _persistent_tree(sd, ez, kw)
    disc = _Persistent("Discriminator", {"_parameters": collections.OrderedDict(w=torch.nn.Parameter(torch.ones(2)))})
    top = {"G": g_ema, "D": disc, "G_ema": g_ema, "augment_pipe": None,
           "training_set_kwargs": ez(path="ffhq.zip", resolution=16)}
    return pickle.dumps(top)


def test_restricted_unpickler_extracts_nvidia_tensors_without_running_code(nvidia_modules, tmp_path):
    ros, latent_avg = _random_rosinality()
    nv = _nvidia_from_rosinality(ros, latent_avg)
    blob = _nvidia_pickle_bytes(nvidia_modules, nv, _init_kwargs())
    assert b"FACERESTORE_PWNED" in blob and b"torch_utils.persistence" in blob
    data = read_nvidia_pickle(blob)
    assert not hasattr(builtins, "FACERESTORE_PWNED")
    g_ema = data["G_ema"]
    assert isinstance(g_ema, PersistentObject) and g_ema.class_name == "Generator"
    assert g_ema.module_src_chars == len(_PAYLOAD_SRC)
    extracted = g_ema.state_dict()
    assert set(extracted) == set(nv)
    for k, v in nv.items():
        assert torch.equal(extracted[k], v), k
    assert g_ema.init_kwargs["synthesis_kwargs"]["channel_base"] == 128
    assert data["training_set_kwargs"] == {"path": "ffhq.zip", "resolution": 16}
    fc0 = g_ema.state["_modules"]["mapping"].state["_modules"]["fc0"]
    assert fc0.state["weight_gain"] == 0.25
    # Whole file path: same images as building from the state dict directly.
    path = tmp_path / "net.pkl"
    path.write_bytes(blob)
    G = load_nvidia_pkl(path)
    ref = generator_from_nvidia(nv, _init_kwargs())
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(G(z), ref(z), rtol=0, atol=0)
    assert not hasattr(builtins, "FACERESTORE_PWNED")
    with pytest.raises(InputError, match="no StyleGAN network 'G_missing'"):
        load_nvidia_pkl(path, key="G_missing")
    with pytest.raises(InputError, match="not a Generator"):
        load_nvidia_pkl(path, key="D")


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def test_restricted_unpickler_refuses_code_execution(nvidia_modules, tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"G_ema": _SystemCall(marker)})
    with pytest.raises(UnsafePickleError, match=r"system") as info:
        read_nvidia_pickle(blob)
    assert "\n" not in str(info.value) and isinstance(info.value, InputError)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        read_nvidia_pickle(pickle.dumps(_EvalCall(marker)))
    # A payload hidden inside an otherwise valid persistent object is refused too.
    _Persistent.reconstruct = nvidia_modules.reconstruct
    evil = _Persistent("Generator", {"_init_kwargs": {"x": _SystemCall(marker)}, "_parameters": {}})
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": evil}))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_nvidia_pkl(path)
    assert not marker.exists()
    with pytest.raises(InputError, match="cannot unpickle"):
        read_nvidia_pickle(b"not a pickle at all")


def test_tensorflow_era_pickles_get_a_specific_message():
    blob = b"cdnnlib.tflib.network\nNetwork\n."  # GLOBAL opcode naming TF StyleGAN's Network class
    with pytest.raises(UnsafePickleError, match="TensorFlow-era"):
        read_nvidia_pickle(blob)


def test_zoo_generator_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError) as info:
        load_zoo_generator("stylegan2-ffhq-1024")
    msg = str(info.value)
    assert "\n" not in msg and "ffhq.pkl" in msg and str(tmp_path) in msg


def test_malformed_or_oversized_checkpoints_are_one_line(tmp_path):
    """A .pt whose generator is not a state dict, or whose tensor shapes imply a network no machine can allocate (a
    stride-0 tensor is a few bytes on disk), is one InputError, checked before anything is built."""
    from facerestore.errors import InputError
    from facerestore.nn.stylegan2_io import load_rosinality_pt

    torch.save({"g_ema": [1, 2]}, tmp_path / "list.pt")
    huge = {"style.1.weight": torch.zeros(1).expand(512, 2**28), "style.1.bias": torch.zeros(512)}
    torch.save({"g_ema": huge}, tmp_path / "huge.pt")
    assert (tmp_path / "huge.pt").stat().st_size < 10_000
    for name, match in (("list.pt", "not a state dict"), ("huge.pt", "StyleGAN2")):
        with pytest.raises(InputError, match=match) as info:
            load_rosinality_pt(tmp_path / name)
        assert "\n" not in str(info.value)
