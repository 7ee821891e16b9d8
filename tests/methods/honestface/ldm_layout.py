"""The original (LDM / CompVis) layout of Stable Diffusion 2.1-base's checkpoint, written from the architecture
(openaimodel.UNetModel with model_channels 320, channel_mult (1, 2, 4, 4), 2 res blocks, attention at the first
three levels, linear transformer projections, context 1024; the KL autoencoder with ch 128, ch_mult (1, 2, 4, 4),
2 res blocks, z 4): key -> shape, independently of diffusers' converters."""

from __future__ import annotations

U = "model.diffusion_model."
V = "first_stage_model."
EMB = 1280
CTX = 1024


def _norm(d, p, c):
    d[p + "weight"] = (c,)
    d[p + "bias"] = (c,)


def _lin(d, p, o, i, bias=True):
    d[p + "weight"] = (o, i)
    if bias:
        d[p + "bias"] = (o,)


def _conv(d, p, o, i, k):
    d[p + "weight"] = (o, i, k, k)
    d[p + "bias"] = (o,)


def _res(d, p, cin, cout):
    _norm(d, p + "in_layers.0.", cin)
    _conv(d, p + "in_layers.2.", cout, cin, 3)
    _lin(d, p + "emb_layers.1.", cout, EMB)
    _norm(d, p + "out_layers.0.", cout)
    _conv(d, p + "out_layers.3.", cout, cout, 3)
    if cin != cout:
        _conv(d, p + "skip_connection.", cout, cin, 1)


def _transformer(d, p, c):
    _norm(d, p + "norm.", c)
    _lin(d, p + "proj_in.", c, c)
    t = p + "transformer_blocks.0."
    for a, kv in (("attn1.", c), ("attn2.", CTX)):
        _lin(d, t + a + "to_q.", c, c, bias=False)
        _lin(d, t + a + "to_k.", c, kv, bias=False)
        _lin(d, t + a + "to_v.", c, kv, bias=False)
        _lin(d, t + a + "to_out.0.", c, c)
    _lin(d, t + "ff.net.0.proj.", 8 * c, c)
    _lin(d, t + "ff.net.2.", c, 4 * c)
    for n in ("norm1.", "norm2.", "norm3."):
        _norm(d, t + n, c)
    _lin(d, p + "proj_out.", c, c)


def sd21_base_unet() -> dict[str, tuple[int, ...]]:
    d: dict[str, tuple[int, ...]] = {}
    mult, base = (1, 2, 4, 4), 320
    _lin(d, U + "time_embed.0.", EMB, base)
    _lin(d, U + "time_embed.2.", EMB, EMB)
    _conv(d, U + "input_blocks.0.0.", base, 4, 3)
    skips, ch, i = [base], base, 1
    for lvl, m in enumerate(mult):
        for _ in range(2):
            out = base * m
            _res(d, f"{U}input_blocks.{i}.0.", ch, out)
            ch = out
            if lvl < 3:
                _transformer(d, f"{U}input_blocks.{i}.1.", ch)
            skips.append(ch)
            i += 1
        if lvl < 3:
            _conv(d, f"{U}input_blocks.{i}.0.op.", ch, ch, 3)
            skips.append(ch)
            i += 1
    _res(d, U + "middle_block.0.", ch, ch)
    _transformer(d, U + "middle_block.1.", ch)
    _res(d, U + "middle_block.2.", ch, ch)
    j = 0
    for lvl in reversed(range(4)):
        for r in range(3):
            out = base * mult[lvl]
            _res(d, f"{U}output_blocks.{j}.0.", ch + skips.pop(), out)
            ch = out
            k = 1
            if lvl < 3:
                _transformer(d, f"{U}output_blocks.{j}.1.", ch)
                k = 2
            if lvl > 0 and r == 2:
                _conv(d, f"{U}output_blocks.{j}.{k}.conv.", ch, ch, 3)
            j += 1
    _norm(d, U + "out.0.", base)
    _conv(d, U + "out.2.", 4, base, 3)
    return d


def _vres(d, p, cin, cout):
    _norm(d, p + "norm1.", cin)
    _conv(d, p + "conv1.", cout, cin, 3)
    _norm(d, p + "norm2.", cout)
    _conv(d, p + "conv2.", cout, cout, 3)
    if cin != cout:
        _conv(d, p + "nin_shortcut.", cout, cin, 1)


def _vattn(d, p, c):
    _norm(d, p + "norm.", c)
    for n in ("q.", "k.", "v.", "proj_out."):
        _conv(d, p + n, c, c, 1)


def sd21_base_vae() -> dict[str, tuple[int, ...]]:
    d: dict[str, tuple[int, ...]] = {}
    chs = (128, 256, 512, 512)
    _conv(d, V + "encoder.conv_in.", 128, 3, 3)
    ch = 128
    for lvl, c in enumerate(chs):
        for b in range(2):
            _vres(d, f"{V}encoder.down.{lvl}.block.{b}.", ch, c)
            ch = c
        if lvl < 3:
            _conv(d, f"{V}encoder.down.{lvl}.downsample.conv.", ch, ch, 3)
    for p in ("encoder.", "decoder."):
        _vres(d, V + p + "mid.block_1.", 512, 512)
        _vattn(d, V + p + "mid.attn_1.", 512)
        _vres(d, V + p + "mid.block_2.", 512, 512)
    _norm(d, V + "encoder.norm_out.", 512)
    _conv(d, V + "encoder.conv_out.", 8, 512, 3)
    _conv(d, V + "quant_conv.", 8, 8, 1)
    _conv(d, V + "post_quant_conv.", 4, 4, 1)
    _conv(d, V + "decoder.conv_in.", 512, 4, 3)
    ch = 512
    for lvl in reversed(range(4)):
        for b in range(3):
            _vres(d, f"{V}decoder.up.{lvl}.block.{b}.", ch, chs[lvl])
            ch = chs[lvl]
        if lvl > 0:
            _conv(d, f"{V}decoder.up.{lvl}.upsample.conv.", ch, ch, 3)
    _norm(d, V + "decoder.norm_out.", 128)
    _conv(d, V + "decoder.conv_out.", 3, 128, 3)
    return d
