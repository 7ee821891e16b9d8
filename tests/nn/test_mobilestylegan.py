"""MobileStyleGAN port (facerestore.nn.mobilestylegan) and the OpenVINO IR reader (facerestore.nn.openvino_ir).

Three kinds of tests:

* everywhere: the IR reader on a small hand-written IR, and the architecture on a tiny randomly initialised
  MobileStyleGAN (W / W+ / W++ layouts, noise inputs, lower resolutions, gradients, precisions);
* with the weights (zoo entry "mobilestylegan-ffhq-1024", else the folder in $FACERESTORE_MOBILESTYLEGAN_DIR):
  the port against a small torch interpreter of the IR graph (an independent reading of the same file),
  W / W+ / W++ equivalence, bf16, parameter count, the strict loader;
* with the weights and the ``openvino`` runtime (dev extra): the port against OpenVINO itself, fp32
  (mapping within 1e-5, synthesis within 1e-3 max abs).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_mobilestylegan
from facerestore.errors import InputError
from facerestore.nn import mobilestylegan as msg
from facerestore.nn.openvino_ir import IRGraph, read_ir

ZOO_NAME = "mobilestylegan-ffhq-1024"
ENV_DIR = "FACERESTORE_MOBILESTYLEGAN_DIR"
SEEDS = (0, 1, 2, 3)


# --------------------------------------------------------------------------------------------------
# A tiny torch interpreter of the IR op set used by the two MobileStyleGAN graphs (test oracle only)
# --------------------------------------------------------------------------------------------------


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1)]


def run_ir(graph: IRGraph, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Evaluate ``graph`` op by op (float32 torch); inputs by Parameter name, outputs by Result name."""
    values: dict[tuple[int, int], torch.Tensor] = {}
    results: dict[str, torch.Tensor] = {}
    readers: dict[tuple[int, int], int] = {}
    for e in graph.edges:
        readers[(e[0], e[1])] = readers.get((e[0], e[1]), 0) + 1
    for i in graph.topological_order():
        layer = graph.layers[i]
        a = [values[graph.source(i, p.id)] for p in layer.inputs]
        for p in layer.inputs:  # free what no later layer reads (1024 px activations are large)
            src = graph.source(i, p.id)
            readers[src] -= 1
            if readers[src] == 0:
                del values[src]
        t, d = layer.type, layer.data
        if t == "Parameter":
            out = [inputs[layer.name]]
        elif t == "Const":
            c = graph.constants[i]
            out = [torch.from_numpy(c.astype(np.float32) if c.dtype.kind == "f" else c.astype(np.int64))]
        elif t in ("Add", "Multiply", "Power"):
            out = [{"Add": torch.add, "Multiply": torch.mul, "Power": torch.pow}[t](a[0], a[1])]
        elif t == "MatMul":
            x, y = a
            x = x.transpose(-1, -2) if d.get("transpose_a") == "true" else x
            y = y.transpose(-1, -2) if d.get("transpose_b") == "true" else y
            out = [x @ y]
        elif t == "ReduceMean":
            out = [a[0].mean(dim=_ints(a[1]), keepdim=d.get("keep_dims") == "true")]
        elif t == "ShapeOf":
            out = [torch.tensor(a[0].shape, dtype=torch.int64)]
        elif t == "Gather":  # only the shape-vector gathers of these graphs
            out = [a[0][a[1]]]
        elif t == "Unsqueeze":
            x = a[0]
            for k in sorted(_ints(a[1])):
                x = x.unsqueeze(k)
            out = [x]
        elif t == "Squeeze":
            x = a[0]
            for k in sorted(_ints(a[1]), reverse=True):
                x = x.squeeze(k)
            out = [x]
        elif t == "Concat":
            out = [torch.cat([v.reshape(1) if v.ndim == 0 else v for v in a], dim=int(d["axis"]))]
        elif t == "Reshape":
            shape = _ints(a[1])
            if d.get("special_zero") == "true":
                shape = [a[0].shape[k] if v == 0 else v for k, v in enumerate(shape)]
            out = [a[0].reshape(shape)]
        elif t == "PReLU":
            out = [torch.where(a[0] >= 0, a[0], a[0] * a[1])]
        elif t == "Broadcast":
            shape = tuple(_ints(a[1]))
            if d.get("mode") == "bidirectional":
                shape = torch.broadcast_shapes(tuple(a[0].shape), shape)
            out = [a[0].expand(*shape)]
        elif t == "Tile":
            out = [a[0].repeat(*_ints(a[1]))]
        elif t == "VariadicSplit":
            out = list(torch.split(a[0], _ints(a[2]), dim=int(a[1])))
        elif t in ("Convolution", "GroupConvolution"):
            w, groups = a[1], 1
            if t == "GroupConvolution":
                groups = w.shape[0]
                w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
            assert layer.attr_ints("pads_begin") == layer.attr_ints("pads_end")
            out = [F.conv2d(a[0], w, stride=layer.attr_ints("strides"), padding=layer.attr_ints("pads_begin"),
                            dilation=layer.attr_ints("dilations"), groups=groups)]
        elif t == "GroupConvolutionBackpropData":
            w = a[1]  # (G, C_in / G, C_out / G, kh, kw)
            assert layer.attr_ints("pads_begin") == (0, 0)
            out = [F.conv_transpose2d(a[0], w.reshape(-1, *w.shape[2:]), stride=layer.attr_ints("strides"),
                                      groups=w.shape[0])]
        elif t == "Result":
            results[layer.name] = a[0]
            out = []
        else:
            raise NotImplementedError(f"IR op {t}")
        for port, v in zip(layer.outputs, out):
            values[(i, port.id)] = v
    return results


# --------------------------------------------------------------------------------------------------
# The IR reader on a hand-written model (no weights needed)
# --------------------------------------------------------------------------------------------------

_TINY_XML = """<?xml version="1.0" ?>
<net name="Tiny" version="10">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="2, 3" element_type="f32"/>
      <output><port id="0" precision="FP32" names="x"><dim>2</dim><dim>3</dim></port></output>
    </layer>
    <layer id="1" name="fc.weight" type="Const" version="opset1">
      <data element_type="f32" shape="4, 3" offset="0" size="48"/>
      <output><port id="0" precision="FP32"><dim>4</dim><dim>3</dim></port></output>
    </layer>
    <layer id="2" name="MatMul_1" type="MatMul" version="opset1">
      <data transpose_a="false" transpose_b="true"/>
      <input><port id="0"><dim>2</dim><dim>3</dim></port><port id="1"><dim>4</dim><dim>3</dim></port></input>
      <output><port id="2" precision="FP32"><dim>2</dim><dim>4</dim></port></output>
    </layer>
    <layer id="3" name="fc.bias" type="Const" version="opset1">
      <data element_type="f32" shape="1, 4" offset="48" size="16"/>
      <output><port id="0" precision="FP32"><dim>1</dim><dim>4</dim></port></output>
    </layer>
    <layer id="4" name="Add_2" type="Add" version="opset1">
      <data auto_broadcast="numpy"/>
      <input><port id="0"><dim>2</dim><dim>4</dim></port><port id="1"><dim>1</dim><dim>4</dim></port></input>
      <output><port id="2" precision="FP32"><dim>2</dim><dim>4</dim></port></output>
    </layer>
    <layer id="5" name="Slope_3" type="Const" version="opset1">
      <data element_type="f32" shape="1" offset="64" size="4"/>
      <output><port id="0" precision="FP32"><dim>1</dim></port></output>
    </layer>
    <layer id="6" name="y" type="PReLU" version="opset1">
      <input><port id="0"><dim>2</dim><dim>4</dim></port><port id="1"><dim>1</dim></port></input>
      <output><port id="2" precision="FP32" names="y, out"><dim>2</dim><dim>4</dim></port></output>
    </layer>
    <layer id="7" name="y/sink_port_0" type="Result" version="opset1">
      <input><port id="0"><dim>2</dim><dim>4</dim></port></input>
    </layer>
  </layers>
  <edges>
    <edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
    <edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
    <edge from-layer="2" from-port="2" to-layer="4" to-port="0"/>
    <edge from-layer="3" from-port="0" to-layer="4" to-port="1"/>
    <edge from-layer="4" from-port="2" to-layer="6" to-port="0"/>
    <edge from-layer="5" from-port="0" to-layer="6" to-port="1"/>
    <edge from-layer="6" from-port="2" to-layer="7" to-port="0"/>
  </edges>
</net>
"""


def _tiny_ir(tmp_path: Path, xml: str = _TINY_XML, blob: bytes | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {"fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
              "fc.bias": rng.standard_normal((1, 4)).astype(np.float32),
              "Slope_3": np.array([0.2], dtype=np.float32)}
    xml_path = tmp_path / "Tiny.xml"
    xml_path.write_text(xml)
    (tmp_path / "Tiny.bin").write_bytes(blob if blob is not None else b"".join(a.tobytes() for a in arrays.values()))
    return xml_path, arrays


def test_ir_reader_on_a_hand_written_model(tmp_path):
    xml_path, arrays = _tiny_ir(tmp_path)
    g = read_ir(xml_path)
    assert (g.name, g.version, len(g.layers), len(g.edges)) == ("Tiny", 10, 8, 7)
    named = g.named_constants()
    assert set(named) == set(arrays)
    for k, a in arrays.items():
        np.testing.assert_array_equal(named[k], a)
        assert named[k].dtype == np.float32
    order = g.topological_order()
    assert order.index(2) > order.index(0) and order.index(6) > order.index(4) and order[-1] == 7
    assert g.source(4, 1) == (3, 0) and g.source(6) == (4, 2)
    assert [layer.name for layer in g.input_layers(2)] == ["x", "fc.weight"]
    assert [layer.type for layer in g.consumers(2)] == ["Add"]
    assert g.layers[6].outputs[0].names == ("y", "out") and g.layers[0].data["shape"] == "2, 3"
    assert g.layers[0].attr_ints("shape") == (2, 3) and [x.name for x in g.of_type("MatMul")] == ["MatMul_1"]
    x = torch.randn(2, 3)
    y = run_ir(g, {"x": x})["y/sink_port_0"]
    ref = x.numpy() @ arrays["fc.weight"].T + arrays["fc.bias"]
    np.testing.assert_allclose(y.numpy(), np.where(ref >= 0, ref, 0.2 * ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda x: x.replace('offset="48" size="16"', 'offset="48" size="12"'), "does not match shape"),
        (lambda x: x.replace('offset="64" size="4"', 'offset="66" size="4"'), r"outside the \.bin"),
        (lambda x: x.replace('element_type="f32" shape="1"', 'element_type="q7" shape="1"'), "element type"),
        (lambda x: x.replace('to-layer="7" to-port="0"', 'to-layer="7" to-port="5"'), "do not exist"),
        (lambda x: x.replace('<net name="Tiny" version="10">', '<net name="Tiny" version="7">'), "IR v10"),
        (lambda x: x.replace("</edges>", ""), "not valid XML"),
        (lambda x: x.replace('<layer id="0"', '<layer id="x"'), "malformed IR"),
        (lambda x: x.replace("<dim>2</dim><dim>3</dim></port></output>", "<dim>?</dim></port></output>", 1),
         "malformed IR"),
    ],
)
def test_ir_reader_refuses_malformed_models(tmp_path, edit, message):
    xml_path, _ = _tiny_ir(tmp_path, edit(_TINY_XML))
    with pytest.raises(InputError, match=message) as info:
        read_ir(xml_path)
    assert "\n" not in str(info.value)


def test_ir_constants_are_views_of_the_bin_bytes(tmp_path):
    """Constants are read-only views, not copies: Const layers naming the same bytes cost no memory each."""
    xml_path, _ = _tiny_ir(tmp_path)
    arrays = list(read_ir(xml_path).constants.values())
    assert arrays and all(not a.flags.writeable and a.base is not None for a in arrays)


def test_ir_reader_needs_the_bin_file(tmp_path):
    xml_path, _ = _tiny_ir(tmp_path)
    (tmp_path / "Tiny.bin").unlink()
    with pytest.raises(InputError, match="not found"):
        read_ir(xml_path)


# --------------------------------------------------------------------------------------------------
# The architecture on a tiny random MobileStyleGAN (no weights needed)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> msg.Generator:
    return tiny_mobilestylegan((16, 16, 8))  # 4 -> 8 -> 16 px, image 32 px


def test_layout_of_the_ffhq_model():
    S = msg.SynthesisNetwork()  # the FFHQ architecture, zero weights
    assert (S.num_ws, S.num_conv_layers, S.full_resolution, S.img_resolution) == (23, 15, 1024, 1024)
    sizes = [s.out_channels for s in S.layer_specs]
    assert sizes == [512] + [128, 512, 512] * 4 + [128, 256, 256, 64, 128, 128, 32, 64, 64, 12]
    assert sum(sizes) == 6252 and [s.w_index for s in S.layer_specs] == list(range(23))
    assert [s.kind for s in S.layer_specs][:5] == ["conv", "up", "conv", "conv", "up"]
    assert S.layer_specs[-1] == msg.StyleLayerSpec("b512.torgb", "torgb", 22, 64, 12, 512)
    assert S.noise_shapes() == [(4, 4)] + [(r, r) for r in (8, 16, 32, 64, 128, 256, 512) for _ in range(2)]
    for spec in S.layer_specs:  # spec names are module paths
        module = S.get_submodule(spec.name)
        assert (module.in_channels, module.out_channels) == (spec.in_channels, spec.out_channels)


def test_haar_idwt_pixel_formula():
    bands = torch.randn(2, 8, 3, 5)  # C = 2
    out = msg.haar_idwt(bands)
    assert out.shape == (2, 2, 6, 10)
    ll, high = bands[:, :2], bands[:, 2:].reshape(2, 2, 3, 3, 5)
    lh, hl, hh = high.unbind(2)
    for p in (0, 1):
        for q in (0, 1):
            sp, sq = 1 - 2 * p, 1 - 2 * q
            torch.testing.assert_close(out[:, :, p::2, q::2], 0.5 * (ll + sp * lh + sq * hl + sp * sq * hh))
    torch.testing.assert_close(F.avg_pool2d(out, 2), 0.5 * ll)  # the LL band is the 2x2 box average (x2)


def test_w_wplus_wpp_and_dense_give_the_same_image(tiny):
    S = tiny.synthesis
    w = tiny.mapping(torch.randn(3, 16, generator=torch.Generator().manual_seed(1)))
    img = S(w)
    assert img.shape == (3, 3, 32, 32) and tiny.img_resolution == 32
    wplus = w[:, None].repeat(1, S.num_ws, 1)
    torch.testing.assert_close(S(wplus), img, rtol=0, atol=1e-5)
    wpp = S.wpp_from_wplus(wplus)
    assert [t.shape[1] for t in wpp] == [s.out_channels for s in S.layer_specs]
    torch.testing.assert_close(S(wpp), img, rtol=0, atol=1e-5)
    dense = wplus[:, :, None].repeat(1, 1, 16, 1)
    torch.testing.assert_close(S(S.wpp_from_dense(dense)), img, rtol=0, atol=1e-5)
    # W+ rows are independent, W++ filters too: changing one latent changes the image
    wpp[3] = wpp[3].clone()
    wpp[3][:, 0] += 1.0
    assert (S(wpp) - img).abs().max() > 1e-3


def test_wpp_filter_latents_act_per_filter(tiny):
    """A W++ latent of output filter o of a conv layer changes only that layer's channel o."""
    S = tiny.synthesis
    w = tiny.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(2)))
    wpp = S.wpp_from_wplus(w)
    layer = S.b8.conv0
    x = S.b8.up(S.b4.conv1(S.const[None], w), w)
    ref = layer(x, wpp[2])
    wpp[2][:, 5] = torch.randn(16)
    out = layer(x, wpp[2])
    changed = (out - ref).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [c == 5 for c in range(layer.out_channels)]


def test_noise_inputs(tiny):
    S = tiny.synthesis
    w = torch.randn(2, 16)
    const = S.const_noises()
    assert [tuple(n.shape[-2:]) for n in const] == S.noise_shapes() and len(const) == S.num_conv_layers == 5
    ref = S(w)
    torch.testing.assert_close(S(w, noises=const), ref)
    torch.testing.assert_close(S(w, noises=[None] * 5), ref)
    assert (S(w, noise_mode="none") - ref).abs().max() > 0
    g = torch.Generator().manual_seed(3)
    r1, r2 = S(w, noise_mode="random", generator=g), S(w, noise_mode="random", generator=g)
    assert (r1 - r2).abs().max() > 0
    with pytest.raises(ValueError, match=r"explicit torch\.Generator"):
        S(w, noise_mode="random")
    with pytest.raises(ValueError, match="noise_mode"):
        S(w, noise_mode="bogus")
    with pytest.raises(ValueError, match="5 maps"):
        S(w, noises=const[:2])
    with pytest.raises(ValueError, match="latents must be"):
        S(torch.randn(2, 4, 16))


def test_lower_resolutions_are_box_averages(tiny):
    w = torch.randn(2, 16)
    full = tiny.synthesis(w)
    for r in (16, 8, 4):
        torch.testing.assert_close(tiny.synthesis(w, resolution=r), F.avg_pool2d(full, 32 // r), rtol=0, atol=1e-6)
    G = msg.Generator(z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 16, 8))
    G.load_state_dict(tiny.state_dict())
    assert G.set_resolution(16) is G and G.img_resolution == G.synthesis.img_resolution == 16
    assert G.synthesis(w).shape == (2, 3, 16, 16)
    for bad in (64, 12, 2):
        with pytest.raises(ValueError, match="power of two"):
            G.set_resolution(bad)


def test_gradients_reach_every_latent_weight_and_noise(tiny):
    S = tiny.synthesis
    w = tiny.mapping(torch.randn(2, 16))
    wpp = [t.requires_grad_(True) for t in S.wpp_from_wplus(w.detach())]
    noises = [n.requires_grad_(True) for n in S.const_noises()]
    S.requires_grad_(True)
    try:
        S(wpp, noises=noises).square().mean().backward()
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in wpp + noises)
        assert all(p.grad is not None for p in S.parameters())
    finally:
        S.requires_grad_(False).zero_grad(set_to_none=True)


def test_the_gradient_path_computes_the_same_image(tiny):
    """With gradients the noise + bias + activation is done out of place (in place without): same numbers, for
    stored, random (per sample) and given noise maps, W+ and W++ latents."""
    S = tiny.synthesis
    w = tiny.mapping(torch.randn(2, 16)).detach()
    given = [torch.randn(2, 1, *shape) for shape in S.noise_shapes()]

    def run(latents, grad: bool, **kw) -> torch.Tensor:
        ws = ([t.clone().requires_grad_(grad) for t in latents] if isinstance(latents, list)
              else latents.clone().requires_grad_(grad))
        return S(ws, generator=torch.Generator().manual_seed(3), **kw)

    before = next(S.parameters()).requires_grad
    S.requires_grad_(False)  # gradients only through the latents, as in an inversion
    try:
        for latents in (w, [t.detach() for t in S.wpp_from_wplus(w)]):
            for kw in ({"noise_mode": "const"}, {"noise_mode": "random"}, {"noises": given}):
                plain, traced = run(latents, False, **kw), run(latents, True, **kw)
                assert traced.requires_grad and not plain.requires_grad
                torch.testing.assert_close(traced.detach(), plain, rtol=0, atol=0)
    finally:
        S.requires_grad_(before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs_close_to_fp32(tiny, dtype):
    z = torch.randn(2, 16)
    ref = tiny(z)
    G = msg.Generator(z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 16, 8))
    G.load_state_dict(tiny.state_dict())
    G = G.to(dtype)
    out = G(z)
    assert out.dtype == dtype
    wpp = G.synthesis.wpp_from_wplus(G.mapping(z))
    assert G.synthesis(wpp).dtype == dtype
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_sample_w_truncation_and_w_avg(tiny):
    g = torch.Generator().manual_seed(0)
    ws = tiny.sample_w(100, g, batch_size=32)
    assert ws.shape == (100, 16)
    G = msg.Generator(z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 16, 8))
    G.load_state_dict(tiny.state_dict())
    avg = G.estimate_w_avg(1000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(G.mapping.w_avg, avg)
    z = torch.randn(4, 16)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), avg.expand(4, -1))
    wp = G.mapping(z)[:, None].repeat(1, G.num_ws, 1)
    t = G.truncate(wp, 0.5, cutoff=2)
    torch.testing.assert_close(t[:, 2:], wp[:, 2:])
    torch.testing.assert_close(t[:, :2], avg.lerp(wp[:, :2], 0.5))


def test_loader_refuses_a_folder_without_the_ir(tmp_path):
    with pytest.raises(InputError, match=r"lacks MappingNetwork\.xml"):
        msg.load_mobilestylegan(tmp_path)
    with pytest.raises(InputError, match="not found"):
        msg.load_mobilestylegan(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# With the weights
# --------------------------------------------------------------------------------------------------


def _weights_folder() -> str | None:
    from facerestore import zoo

    if zoo.is_available(ZOO_NAME):  # cached: must verify (a damaged cache fails, it is not "no weights")
        path = os.fspath(zoo.weights_path(ZOO_NAME))
        if all(os.path.isfile(os.path.join(path, f)) for f in msg.IR_FILES):
            return path
    path = os.environ.get(ENV_DIR)
    if path and all(os.path.isfile(os.path.join(path, f)) for f in msg.IR_FILES):
        return path
    return None


@pytest.fixture(scope="module")
def folder() -> str:
    path = _weights_folder()
    if path is None:
        pytest.skip(f"MobileStyleGAN weights not found: run `facerestore models download {ZOO_NAME}` "
                    f"or set {ENV_DIR} to a folder with {', '.join(msg.IR_FILES)}")
    return path


@pytest.fixture(scope="module")
def G(folder) -> msg.Generator:
    return msg.load_mobilestylegan(folder)


@pytest.fixture(scope="module")
def zs() -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.random.default_rng(s).standard_normal(512).astype(np.float32))
                        for s in SEEDS])


@pytest.fixture(scope="module")
def reference(G, zs):
    """Our W images (B = 2) for seeds 0, 1; every later test compares against these."""
    with torch.no_grad():
        w = G.mapping(zs[:2])
        return w, G.synthesis(w)


@pytest.fixture(scope="module")
def openvino_models(folder):
    ov = pytest.importorskip("openvino", reason="the openvino runtime is not installed (pip install -e .[dev])")
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin would otherwise run bf16 on some CPUs
    return tuple(core.compile_model(core.read_model(os.path.join(folder, f"{n}.xml")), "CPU", cfg)
                 for n in ("MappingNetwork", "SynthesisNetwork"))


def test_mapping_matches_openvino(G, zs, openvino_models):
    mapping, _ = openvino_models
    with torch.no_grad():
        ours = G.mapping(zs).numpy()
    theirs = np.concatenate([mapping(z[None].numpy())[0] for z in zs])
    assert np.abs(ours - theirs).max() < 1e-5


def test_synthesis_matches_openvino(reference, openvino_models):
    _, synthesis = openvino_models
    w, ours = reference
    theirs = np.concatenate([synthesis(v[None].numpy())[0] for v in w])
    assert theirs.shape == ours.shape == (2, 3, 1024, 1024)
    assert np.abs(ours.numpy() - theirs).max() < 1e-3
    assert -1.5 < float(ours.mean()) < 1.5 and float(ours.std()) > 0.1  # an image, not a constant


def test_port_matches_an_independent_interpreter_of_the_ir(G, folder, zs, reference):
    """The IR graphs run op by op (no OpenVINO needed): the same numbers as the port."""
    mapping_ir = read_ir(os.path.join(folder, "MappingNetwork.xml"))
    (w_ir,) = run_ir(mapping_ir, {"var": zs[:1]}).values()
    w, img = reference
    assert (w_ir - w[:1]).abs().max() < 1e-5
    synthesis_ir = read_ir(os.path.join(folder, "SynthesisNetwork.xml"))
    with torch.no_grad():
        (img_ir,) = run_ir(synthesis_ir, {"style": w[:1]}).values()
    assert (img_ir - img[:1]).abs().max() < 1e-3


def test_w_wplus_wpp_identical_and_lower_resolution(G, reference):
    w, img = reference
    S = G.synthesis
    with torch.no_grad():
        wplus = w[:, None].repeat(1, 23, 1)
        torch.testing.assert_close(S(wplus), img, rtol=0, atol=1e-6)
        wpp = S.wpp_from_wplus(wplus)
        assert [t.shape for t in wpp] == [(2, s.out_channels, 512) for s in S.layer_specs]
        torch.testing.assert_close(S(wpp, resolution=512), F.avg_pool2d(img, 2), rtol=0, atol=2e-4)
        torch.testing.assert_close(S(w, resolution=256), F.avg_pool2d(img, 4), rtol=0, atol=1e-5)


def test_bf16_is_close_to_fp32(folder, reference):
    w, img = reference
    Gb = msg.load_mobilestylegan(folder).to(torch.bfloat16)
    with torch.no_grad():
        out = Gb.synthesis(w[:1]).float()
    diff = out - img[:1]
    assert diff.abs().mean() < 0.02
    assert 10 * math.log10(4.0 / float(diff.square().mean())) > 35  # PSNR on the [-1, 1] range


def test_parameter_count_and_w_avg(G, zs):
    assert sum(p.numel() for p in G.mapping.parameters()) == 8 * (512 * 512 + 512)
    assert sum(p.numel() for p in G.synthesis.parameters()) == 7_306_395
    assert len(G.synthesis.const_noises()) == 15
    assert (G.num_ws, G.w_dim, G.img_resolution) == (23, 512, 1024)
    with torch.no_grad():
        w = G.mapping(zs)
    # w_avg is the mean of many mapping outputs: far closer to each w than the w are to each other
    assert float((w - G.mapping.w_avg).norm(dim=1).mean()) < float((w[0] - w[1]).norm())
    assert G.mapping.w_avg.abs().sum() > 0


def test_loader_is_strict(folder, tmp_path):
    for name in msg.IR_FILES:
        shutil.copy(os.path.join(folder, name), tmp_path / name)
    xml = tmp_path / "SynthesisNetwork.xml"
    xml.write_text(xml.read_text().replace('name="m.layers.3.conv1.conv.weight_dw"', 'name="renamed"'))
    with pytest.raises(InputError, match=re.escape("m.layers.3.conv1.conv.weight_dw")) as info:
        msg.load_mobilestylegan(tmp_path)
    assert "\n" not in str(info.value)


def test_resolve_generator_dispatches_the_zoo_name(folder, monkeypatch):
    from facerestore import zoo
    from facerestore.nn import stylegan2_io

    if zoo.has_entry(ZOO_NAME):
        assert zoo.get_entry(ZOO_NAME).format == "openvino-ir"
    monkeypatch.setattr(zoo, "has_entry", lambda name: name == ZOO_NAME)
    monkeypatch.setattr(zoo, "weights_path", lambda name, **kw: Path(folder))
    monkeypatch.setattr(zoo, "get_entry", lambda name: type("Entry", (), {"format": "openvino-ir"})())
    G = stylegan2_io.resolve_generator(ZOO_NAME)
    assert isinstance(G, msg.Generator) and G.img_resolution == 1024
