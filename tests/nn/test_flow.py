"""MAF prior (nn/flow.py): autoregressive structure, log-det, invertibility, density, batch-norm modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from facerestore.nn.flow import MADE, MAF, BatchNormFlow, Reverse, load_flow, made_masks, save_flow, train_flow


def _randomise(flow: MAF, seed: int = 0) -> MAF:
    """Give every parameter and batch-norm statistic a non-trivial value (float64, eval mode)."""
    g = torch.Generator().manual_seed(seed)
    flow = flow.double()
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in flow.modules():
            if isinstance(m, BatchNormFlow):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
        flow.mean.copy_(torch.randn(flow.dim, generator=g, dtype=torch.float64))
        flow.std.copy_(torch.rand(flow.dim, generator=g, dtype=torch.float64) + 0.5)
    return flow.eval()


def _jac(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(fn, x)


def test_made_masks_degrees():
    d, h = 5, 12
    m_in, m_hid, m_out = made_masks(d, h, num_hidden_layers=2)
    assert m_in.shape == (h, d) and m_hid.shape == (h, h) and m_out.shape == (2 * d, h)
    # Connectivity of output j to input i through the masks (path counting) must vanish for i >= j.
    paths = (m_out @ m_hid @ m_in).numpy()
    for j in range(d):
        for rows in (paths[j], paths[d + j]):
            assert np.all(rows[j:] == 0)
            assert np.all(rows[:j] > 0)  # every earlier input is reachable


def test_made_jacobian_is_strictly_autoregressive():
    torch.manual_seed(0)
    made = MADE(6, hidden=24).double()
    with torch.no_grad():
        for p in made.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(6, dtype=torch.float64)
    jm = _jac(lambda v: made.params(v[None])[0][0], x)
    ja = _jac(lambda v: made.params(v[None])[1][0], x)
    for j in (jm, ja):
        assert torch.all(torch.triu(j) == 0)  # mu_j, alpha_j depend on x_<j only
        assert torch.count_nonzero(torch.tril(j, -1)) > 0
    # u = (x - mu) exp(-alpha): lower-triangular Jacobian with diagonal exp(-alpha).
    ju = _jac(lambda v: made(v[None])[0][0], x)
    assert torch.all(torch.triu(ju, 1) == 0)
    _, alpha = made.params(x[None])
    torch.testing.assert_close(torch.diagonal(ju), torch.exp(-alpha[0]))


def test_block_jacobian_lower_triangular_in_permuted_order():
    torch.manual_seed(1)
    made, bn, rev = MADE(5, hidden=20).double(), BatchNormFlow(5).double(), Reverse()
    bn.eval()
    with torch.no_grad():
        for p in [*made.parameters(), *bn.parameters()]:
            p.normal_(0, 0.5)

    def block(v):
        y, _ = made(v[None])
        y, _ = bn(y)
        return rev(y)[0][0]

    j = _jac(block, torch.randn(5, dtype=torch.float64))
    assert torch.count_nonzero(torch.triu(j, 1)) > 0  # not triangular in the natural order ...
    jp = j.flip(0)  # ... but lower-triangular once the outputs are read in the reversed order
    assert torch.all(torch.triu(jp, 1) == 0)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_logdet_matches_brute_force_jacobian(batch_norm):
    flow = _randomise(MAF(4, num_blocks=3, hidden=16, batch_norm=batch_norm), seed=2)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, logdet = flow(x)
    for i in range(x.shape[0]):
        j = _jac(lambda v: flow(v[None])[0][0], x[i])
        sign, ref = torch.linalg.slogdet(j)
        assert sign != 0
        torch.testing.assert_close(logdet[i], ref, rtol=1e-10, atol=1e-10)


def test_inverse_round_trip_and_leading_dims():
    flow = _randomise(MAF(5, num_blocks=4, hidden=20), seed=4)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 7, 5, dtype=torch.float64, generator=g)  # e.g. (B, num_ws, dim) W+ latents
    u, logdet = flow(w)
    assert u.shape == w.shape and logdet.shape == (3, 7)
    torch.testing.assert_close(flow.inverse(u), w, rtol=0, atol=1e-10)
    u2 = torch.randn(4, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(flow(flow.inverse(u2))[0], u2, rtol=0, atol=1e-10)
    # Leading dims are only a reshape: row-wise results match the flat batch.
    u_flat, ld_flat = flow(w.reshape(-1, 5))
    torch.testing.assert_close(u_flat.reshape(3, 7, 5), u)
    torch.testing.assert_close(ld_flat.reshape(3, 7), logdet)


def test_density_of_random_flow_integrates_to_one():
    flow = _randomise(MAF(2, num_blocks=2, hidden=8), seed=6)
    with torch.no_grad():  # keep the random flow tame so the mass sits well inside the grid
        for m in flow.modules():
            if isinstance(m, MADE):
                m.net[-1].weight.mul_(0.3)
                m.net[-1].bias.mul_(0.3)
    u = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        w = flow.inverse(u)
    lo, hi = w.min(0).values - 4 * w.std(0), w.max(0).values + 4 * w.std(0)
    xs = [torch.linspace(float(lo[i]), float(hi[i]), 600, dtype=torch.float64) for i in range(2)]
    grid = torch.stack(torch.meshgrid(*xs, indexing="ij"), -1)
    with torch.no_grad():
        p = flow.log_prob(grid.reshape(-1, 2)).exp().reshape(600, 600).numpy()
    mass = np.trapezoid(np.trapezoid(p, xs[1].numpy(), axis=1), xs[0].numpy())
    assert abs(mass - 1.0) < 5e-3


def test_trained_flow_matches_true_gaussian_log_density():
    mu = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.5]])
    chol = torch.linalg.cholesky(cov)

    def sample_fn(n, g):
        return mu + torch.randn((n, 2), generator=g) @ chol.T

    g = torch.Generator().manual_seed(0)
    flow = train_flow(sample_fn, steps=300, batch=512, lr=1e-2, generator=g, num_blocks=2, hidden=16,
                      n_stats=4000, n_calibrate=4000)
    assert not flow.training
    torch.testing.assert_close(flow.mean, mu, atol=0.1, rtol=0)
    x = sample_fn(2000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = flow.log_prob(x).numpy()
    ref = multivariate_normal(mu.numpy(), cov.numpy()).logpdf(x.numpy())
    err = np.abs(ours - ref)
    assert err.mean() < 0.05, err.mean()
    assert np.quantile(err, 0.95) < 0.12
    # Gaussianisation: F(w) of data is close to standard normal.
    with torch.no_grad():
        u = flow(x)[0]
    torch.testing.assert_close(u.mean(0), torch.zeros(2), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(u.T), torch.eye(2), atol=0.15, rtol=0)


def test_a_diverging_flow_training_is_one_line_error():
    from facerestore.errors import TrainingError

    def sample_fn(n, generator):  # finite statistics, then a training batch that overflows
        return torch.randn((n, 4), generator=generator) * (float("inf") if n == 8 else 1.0)

    with pytest.raises(TrainingError, match="non-finite loss at step 0; try a smaller learning rate"):
        train_flow(sample_fn, steps=3, batch=8, lr=1e-2, generator=torch.Generator().manual_seed(0), num_blocks=1,
                   hidden=8, n_stats=100, n_calibrate=100)


def test_batchnorm_flow_modes():
    bn = BatchNormFlow(3)
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0, 0.2]) + 5
    y, logdet = bn.train()(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(logdet[0], -0.5 * torch.log(x.var(0, unbiased=False) + bn.eps).sum())
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(0))  # momentum 0.1 from zero


def test_calibrated_eval_equals_train_on_the_same_batch():
    flow = _randomise(MAF(4, num_blocks=3, hidden=16), seed=8)
    x = torch.randn(300, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2 + 1
    flow.calibrate(x)
    with torch.no_grad():
        u_eval, ld_eval = flow.eval()(x)
        u_train, ld_train = flow.train()(x)
    torch.testing.assert_close(u_eval, u_train, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ld_eval, ld_train, rtol=1e-10, atol=1e-10)


def test_train_flow_is_seeded_and_round_trips_through_safetensors(tmp_path):
    def sample_fn(n, g):
        return torch.randn((n, 3), generator=g) * torch.tensor([1.0, 2.0, 0.5])

    kw = dict(steps=5, batch=32, lr=1e-3, num_blocks=2, hidden=8, n_stats=200, n_calibrate=200)
    a = train_flow(sample_fn, generator=torch.Generator().manual_seed(42), **kw)
    b = train_flow(sample_fn, generator=torch.Generator().manual_seed(42), **kw)
    c = train_flow(sample_fn, generator=torch.Generator().manual_seed(43), **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    path = tmp_path / "maf.safetensors"
    save_flow(a, path)
    loaded = load_flow(path)
    x = sample_fn(10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), a.log_prob(x), rtol=0, atol=0)
    assert loaded.config == a.config
    # float16 storage: the loaded flow computes in float32 with every stored value rounded to float16
    save_flow(a, tmp_path / "half.safetensors", half=True)
    half = load_flow(tmp_path / "half.safetensors")
    for k, v in a.state_dict().items():
        assert half.state_dict()[k].dtype == v.dtype
        torch.testing.assert_close(half.state_dict()[k], v.half().to(v.dtype), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(half.log_prob(x), a.log_prob(x), rtol=0, atol=0.05)


def test_train_flow_resumes_exactly_from_its_checkpoint_and_refuses_other_settings(tmp_path):
    from facerestore.errors import InputError
    from facerestore.nn.flow import read_flow_checkpoint

    def sample_fn(n, g):
        return torch.randn((n, 3), generator=g) * torch.tensor([1.0, 2.0, 0.5]) + 0.3

    kw = dict(steps=8, batch=32, lr=1e-2, num_blocks=2, hidden=8, n_stats=200, n_calibrate=200, settings={"seed": 5})
    straight = train_flow(sample_fn, generator=torch.Generator().manual_seed(5), **kw)
    ckpt = tmp_path / "flow.ckpt"
    seen: list[int] = []
    # a signal after step 3 (0-based): the flow stops there, saves the checkpoint and still returns usable weights
    part = train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=ckpt, save_every=2,
                      callback=lambda s, nll: seen.append(s), should_stop=lambda: len(seen) == 4, **kw)
    assert seen == [0, 1, 2, 3] and torch.load(ckpt, weights_only=True)["step"] == 4
    assert not part.training and torch.isfinite(part.log_prob(sample_fn(16, torch.Generator()))).all()
    first_seconds = read_flow_checkpoint(ckpt)["seconds"]
    assert first_seconds > 0
    seen.clear()
    resumed = train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=ckpt, save_every=2,
                         callback=lambda s, nll: seen.append(s), **kw)
    assert seen == [4, 5, 6, 7]  # only the steps not yet done
    for (k, v), (_, u) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, u), k  # the same weights and calibration as the run that never stopped
    info = read_flow_checkpoint(ckpt)
    assert info["seconds"] > first_seconds and info["step"] == info["steps"] == 8  # time adds up over chunks
    with pytest.raises(InputError, match=r"settings changed since its checkpoint \(lr: 0.01 -> 0.001\)"):
        train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=ckpt, **{**kw, "lr": 1e-3})
    with pytest.raises(InputError, match=r"seed: 5 -> 6"):
        train_flow(sample_fn, generator=torch.Generator().manual_seed(6), checkpoint=ckpt,
                   **{**kw, "settings": {"seed": 6}})
    longer = tmp_path / "copy.ckpt"
    longer.write_bytes(ckpt.read_bytes())
    with pytest.warns(UserWarning, match="planned for 8 steps, now 12"):  # the schedule jumps: said
        train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=longer, **{**kw, "steps": 12})
    with pytest.raises(InputError, match="past the 6 steps asked"):
        train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=ckpt, **{**kw, "steps": 6})
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="is not a flow checkpoint"):
        train_flow(sample_fn, generator=torch.Generator().manual_seed(5), checkpoint=ckpt, **kw)
