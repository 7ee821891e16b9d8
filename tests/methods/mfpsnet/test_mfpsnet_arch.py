"""FRSNet / MFPSNet (paper 001): genotypes, relaxation, decoding, decoded networks and their parameter counts."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from facerestore.errors import InputError
from facerestore.methods.mfpsnet.decode import (
    brute_force_path,
    decode_cell,
    normalized_alphas,
    normalized_betas,
    path_probability,
    viterbi_path,
)
from facerestore.methods.mfpsnet.genotype import (
    PRESETS,
    Genotype,
    ModuleGenotype,
    edge_range,
    load_genotype,
    num_edges,
    save_genotype,
)
from facerestore.methods.mfpsnet.network import FRSNet, MFPSNet, count_parameters, released_dead_parameters
from facerestore.methods.mfpsnet.search_space import SearchFRSNet, SearchMFPSNet

TINY = {"nf": 8, "growth": 4, "blocks": 1, "sr_filters": 2}


def test_edges_of_a_three_step_cell():
    assert num_edges(3) == 9
    assert [list(edge_range(s)) for s in range(3)] == [[0, 1], [2, 3, 4], [5, 6, 7, 8]]


def test_released_mfpsnet_has_the_released_parameter_count():
    g = PRESETS["released"]
    with torch.device("meta"):
        ours = MFPSNet(g)
        released = MFPSNet(g, released_extras=True)
        frs = FRSNet(g)
    # ours: only what the forward pass uses
    assert count_parameters(ours) == 17_540_927
    assert count_parameters(ours.fusion) == 13_552_704
    assert count_parameters(frs) == 2_863_299
    # the authors' model object also holds unused projections, an unused BatchNorm and an abandoned baseline's
    # three convolutions: 18,356,043 = the paper's 18.4M and the 18.356M
    assert count_parameters(released) == 18_356_043
    dead = released_dead_parameters(ours)
    assert count_parameters(ours.fusion) + dead["fusion"] == 14_217_696  # the issue says 14.23M (see the docs)
    # hand count of two pieces: the SR stem (3x3 ConvBR 64 -> 192) and one dense block (64 ch, growth 32)
    assert count_parameters(ours.sr.stem) == 9 * 64 * 192 + 2 * 192
    assert count_parameters(ours.trunk[0]) == sum(9 * (64 + 32 * i) * (32 if i < 4 else 64) + (32 if i < 4 else 64)
                                                  for i in range(5))


def test_released_networks_run_at_128():
    torch.manual_seed(0)
    net = MFPSNet(PRESETS["released"]).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        feats = net.sr(net.trunk(net.conv_first(torch.nn.functional.pixel_unshuffle(x, 8))))
        out1, out2 = net(x)
    assert feats.shape == (1, 24, 128, 128)
    assert out1.shape == out2.shape == x.shape and torch.isfinite(out2).all()


def test_relaxation_weights_sum_to_one():
    a = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(normalized_alphas(a).sum(-1), torch.ones(9))
    b = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(1))
    nb = normalized_betas(b)
    torch.testing.assert_close(nb.sum(-1), torch.ones(6, 4))
    assert (nb[:, 0, 0] == 0).all() and (nb[:, 3, 2] == 0).all()  # no arrow leaves the 4 levels
    # a middle node is a plain softmax over its 3 arrows
    torch.testing.assert_close(nb[2, 1], torch.softmax(b[2, 1], -1))
    torch.testing.assert_close(nb[2, 0, 1:], torch.softmax(b[2, 0, 1:], -1))


def test_decode_cell_on_hand_set_alphas():
    w = np.array([
        [0.6, 0.05, 0.3, 0.05], [0.1, 0.5, 0.2, 0.2],  # block 0: both inputs kept; edge 0's best is skip
        [0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.1, 0.05, 0.05, 0.8],  # block 1: edge 3 only strong in skip
        [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.7, 0.1], [0.6, 0.3, 0.05, 0.05], [0.5, 0.05, 0.05, 0.4],
    ])
    logits = torch.tensor(np.log(w), dtype=torch.float32)  # rows sum to 1: softmax(logits) == w
    torch.testing.assert_close(normalized_alphas(logits), torch.tensor(w, dtype=torch.float32))
    # ranked by the best non-skip op: block 1 keeps edges 2 (conv3 .6) and 4 (conv7 .8), block 2 edges 6 and 8
    assert decode_cell(logits, rule="non-skip") == [(0, 2), (1, 1), (2, 1), (4, 3), (6, 2), (8, 3)]
    # same ranking, but the kept op is the strongest of all: skip on edges 0 and 8
    assert decode_cell(logits, rule="code") == [(0, 0), (1, 1), (2, 1), (4, 3), (6, 2), (8, 0)]
    # DARTS: skip ranks too, so edge 3 (skip .7) enters block 1 and edge 7 (skip .6) block 2
    assert decode_cell(logits, rule="darts") == [(0, 0), (1, 1), (3, 0), (4, 3), (6, 2), (7, 0)]
    with pytest.raises(ValueError):
        decode_cell(logits, rule="best")
    # the same logits as an array decode alike (they were used raw, as if already probabilities)
    for rule in ("non-skip", "code", "darts"):
        assert decode_cell(logits.numpy(), rule=rule) == decode_cell(logits, rule=rule)
    shifted = np.log(w) + np.arange(9)[:, None] * 3.0  # a per-edge constant: same probabilities, other raw order
    assert decode_cell(shifted, rule="non-skip") == decode_cell(logits, rule="non-skip")


def test_viterbi_on_a_hand_made_beta():
    # from level 0, the strong arrows go 0 -> 1 -> 2 -> 2 -> 1 -> 0
    b = torch.full((6, 4, 3), -5.0)
    want = [1, 2, 2, 1, 0, 0]
    prev = 0
    for layer, level in enumerate(want):
        b[layer, prev, level - prev + 1] = 5.0
        prev = level
    assert viterbi_path(b, 0) == want
    path, p = brute_force_path(b, 0)
    assert path == want and p == pytest.approx(path_probability(normalized_betas(b.double()).numpy(), want, 0))


@pytest.mark.parametrize("seed, start, layers", [(s, st, n) for s, (st, n) in
                                                  itertools.product(range(6), [(0, 3), (3, 4), (1, 5)])])
def test_viterbi_equals_brute_force(seed, start, layers):
    b = 2 * torch.randn(layers, 4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    nb = normalized_betas(b).numpy()
    best, p = brute_force_path(b, start)
    vit = viterbi_path(b, start)
    assert path_probability(nb, vit, start) == pytest.approx(p, rel=1e-12)
    assert vit == best


def test_genotype_json_round_trip(tmp_path):
    for name, g in PRESETS.items():
        p = save_genotype(g, tmp_path / f"{name}.json")
        assert load_genotype(p) == g
        assert json.loads(p.read_text())["format"] == "facerestore-mfpsnet-genotype"
    assert load_genotype("released") is PRESETS["released"]
    assert PRESETS["released"]["sr"].path == (2, 1, 1, 1, 0, 1)
    assert PRESETS["released"]["fusion"].cell == ((0, 0), (1, 0), (2, 2), (4, 2), (7, 2), (8, 3))


@pytest.mark.parametrize("bad, match", [
    ({"sr": {"path": [1, 1], "cell": [[0, 1], [2, 1], [5, 1]]}}, "jumps"),  # 3 -> 1 in one layer
    ({"sr": {"path": [2], "cell": [[0, 1], [2, 1], [5, 9]]}}, "op 9"),
    ({"sr": {"path": [2], "cell": [[0, 1], [5, 1]]}}, "block 1"),
    ({"parse": {"path": [0], "cell": [[0, 1], [2, 1], [5, 1]]}}, "'sr' is missing"),
])
def test_bad_genotypes_are_one_line_errors(tmp_path, bad, match):
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"format": "facerestore-mfpsnet-genotype", "version": 1, "modules": bad}))
    with pytest.raises(InputError, match=match):
        load_genotype(p)


def test_any_genotype_builds_and_runs():
    g = Genotype({"sr": ModuleGenotype((3, 2, 3), ((0, 3), (1, 0), (3, 2), (5, 1), (8, 0)))})
    net = FRSNet(g, **TINY)
    x = torch.rand(2, 3, 64, 64)
    assert net(x).shape == x.shape


def test_relaxation_gradients_reach_alpha_and_beta():
    torch.manual_seed(0)
    net = SearchMFPSNet(**TINY, prior_filters=2, fusion_filters=2, layers=3, prior_layers=2, fusion_layers=2)
    x = torch.rand(1, 3, 64, 64)
    priors = {"parse": torch.rand(1, 19, 64, 64), "heat": torch.rand(1, 71, 64, 64),
              "dict": torch.rand(1, 256, 64, 64)}
    out1, out2 = net(x, priors=priors)
    ((out1 - x).abs().mean() + (out2 - x).abs().mean()).backward()
    arch = net.arch_parameters()
    assert len(arch) == 10  # alpha + beta of sr, parse, heat, dict, fusion
    for p in arch:
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
    assert all(torch.isfinite(p.grad).all() for p in net.weight_parameters() if p.grad is not None)
    g = net.genotype()
    assert g.has_priors and len(g["fusion"].path) == 2
    assert MFPSNet(g, **TINY, prior_filters=2, fusion_filters=2)(x, priors=priors)[1].shape == x.shape


def test_forced_betas_decode_to_their_path():
    """Betas that make one path certain decode to that path (from level 3, the upsampling start)."""
    net = SearchFRSNet(**TINY, layers=3)
    with torch.no_grad():
        net.sr.betas.fill_(-30.0)
        for layer, (prev, level) in enumerate(zip([3, 2, 1], [2, 1, 1])):
            net.sr.betas[layer, prev, level - prev + 1] = 30.0
    assert net.genotype()["sr"].path == (2, 1, 1)
