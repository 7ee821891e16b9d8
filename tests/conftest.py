"""Shared fixtures: paths to the repo's example image and to ../shared/data (tests skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_DATA = Path(os.environ.get("FACERESTORE_SHARED_DATA", REPO.parent / "shared" / "data"))

# One intra-op thread: the suite runs many small tensor ops, for which OpenMP hand-offs cost more than they
# gain on a 2-core machine (10-40x slower when the machine is busy), and results do not depend on it.
torch.set_num_threads(1)


def free_port() -> int:
    """A local TCP port nothing listens on now (a fixed one collides with other runs on the machine; nothing
    listening also makes a download to it fail at once, with no DNS or network)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deliver_signal(signum: int) -> None:
    """Run the handler installed for ``signum`` as a signal would (tests of deferred stops): a missing handler is
    an assertion failure of that test, where a real signal to the test process would end the whole run."""
    import signal

    handler = signal.getsignal(signum)
    assert callable(handler), f"no Python handler installed for signal {signum}"
    handler(signum, None)


@pytest.fixture(autouse=True)
def _torch_global_state_restored():
    """A Trainer turns on deterministic algorithms (with NaN-filled torch.empty), cuBLAS's workspace setting and
    seeds the global RNG; several training loops seed it too. Each test gets back the state it found, so that no
    test's outcome depends on which training test ran before it."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.random.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


# dlib 68 points of the astronaut fixture's face (test input data, rounded to integers; shared by face tests)
ASTRONAUT_LM68 = np.array([
    179, 104, 180, 116, 181, 127, 182, 139, 185, 150, 191, 160, 200, 168, 209, 176, 220, 178, 232, 177, 243, 171,
    253, 163, 260, 154, 265, 143, 268, 131, 270, 120, 272, 108, 186, 94, 192, 88, 200, 87, 208, 89, 216, 92, 236,
    93, 244, 91, 252, 91, 260, 92, 265, 99, 226, 102, 225, 111, 225, 119, 225, 127, 214, 131, 219, 133, 224, 134,
    229, 133, 234, 132, 195, 101, 200, 98, 207, 98, 212, 104, 206, 104, 199, 104, 237, 106, 243, 100, 250, 100,
    255, 105, 250, 107, 244, 107, 201, 139, 209, 139, 218, 139, 224, 141, 230, 140, 238, 140, 246, 141, 238, 151,
    229, 155, 222, 156, 216, 155, 208, 150, 204, 141, 218, 143, 223, 144, 230, 143, 243, 142, 229, 150, 223, 151,
    217, 150,
], dtype=np.float64).reshape(68, 2)

# torchvision VGG16 `features` convolutions as (index, out_channels, in_channels): the upstream layout that
# backbone and DISTS layout tests check against (shared test data)
VGG16_CONVS = [
    (0, 64, 3),
    (2, 64, 64),
    (5, 128, 64),
    (7, 128, 128),
    (10, 256, 128),
    (12, 256, 256),
    (14, 256, 256),
    (17, 512, 256),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
]


def pytest_collection_modifyitems(config, items):
    has_data = SHARED_DATA.is_dir()
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "data" in item.keywords and not has_data:
            item.add_marker(pytest.mark.skip(reason=f"needs ../shared/data (not found at {SHARED_DATA})"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs ../shared/data (not found at {SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return EXAMPLES / "astronaut.png"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """(512, 512, 3) float32 RGB in [0, 1]: NASA's public-domain portrait (bundled example)."""
    from facerestore.io import read_rgb

    return read_rgb(EXAMPLES / "astronaut.png")


@pytest.fixture(scope="session")
def astronaut_tensor(astronaut) -> torch.Tensor:
    from facerestore.io import to_tensor

    return to_tensor(astronaut)


def assert_resume_is_exact(make_cfg, runs_dir, steps: int, nets=("generator", "discriminator")) -> dict:
    """Train ``make_cfg("name=full")`` to the end and ``make_cfg("name=split")`` interrupted after its first
    step then resumed; assert bit-identical networks and EMA, return the full run's last checkpoint."""
    from facerestore.methods import training_adapter
    from facerestore.train import train
    from facerestore.train.checkpoint import load_checkpoint

    def run(cfg):
        return train(cfg, adapter=training_adapter(cfg.method), progress=False)

    res = run(make_cfg("name=full"))
    assert res["finished"] and res["step"] == steps
    part = run(make_cfg("name=split", "time_limit_s=1.0e-9"))
    assert part["stopped_early"] and part["step"] == 1
    assert run(make_cfg("name=split"))["finished"]
    a = load_checkpoint(runs_dir / "full/checkpoints/last.pt")
    b = load_checkpoint(runs_dir / "split/checkpoints/last.pt")
    for net in nets:
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), (net, k)
    for k, v in a["ema"]["shadow"].items():
        assert torch.equal(v, b["ema"]["shadow"][k]), k
    return a


def make_face_dataset(root, n: int = 12, size: int = 32, seed: int = 0):
    """Smooth random colour images named like FFHQ files (00000.png ...) for training tests."""
    from facerestore.io import write_image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a = rng.random((3, 3))
        img = np.stack([a[c, 0] * xx + a[c, 1] * yy + a[c, 2] * np.sin(6 * xx * (c + 1)) for c in range(3)], -1)
        img = (img - img.min()) / (np.ptp(img) + 1e-6)
        write_image(root / f"{i:05d}.png", img.astype(np.float32))
    return root


def dlib_identity_missing() -> str | None:
    """Why dlib's recogniser + 5-point predictor files are unavailable (None when both are there)."""
    from facerestore.errors import WeightsMissingError
    from facerestore.zoo.dlib_files import model_path

    try:
        for name in ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat"):
            model_path(name)
    except WeightsMissingError as exc:
        return str(exc)
    return None


_DLIB_MISSING = dlib_identity_missing()
needs_dlib = pytest.mark.skipif(_DLIB_MISSING is not None,
                                reason=f"dlib's face recogniser files are absent: {_DLIB_MISSING}")


def random_w_encoder(w_dim: int, *, in_size: int = 32, seed: int = 0):
    """A small W encoder (``LatentEncoder``, eval mode) whose head is not zero: an untrained one returns ``w_avg``
    for every face, which would hide whether a restorer uses it."""
    from facerestore.methods.inversion.encoder import LatentEncoder

    g = torch.Generator().manual_seed(seed)
    enc = LatentEncoder(torch.randn(w_dim, generator=g), torch.rand(w_dim, generator=g) + 0.5, in_size=in_size,
                        width=4, max_channels=8)
    with torch.no_grad():
        enc.head.weight.copy_(torch.randn(enc.head.weight.shape, generator=g) * 0.1)
    return enc.eval()


def tiny_stylegan2(w_dim: int, *, channel_base: int, channel_max: int, mapping_layers: int, n_avg: int,
                   resolution: int = 32):
    """A tiny seeded StyleGAN2 generator (z and w ``w_dim``-d, eval mode, frozen) whose ``w_avg`` is the mean of
    ``n_avg`` mapped samples, as the loaders estimate it: the prior of the inversion and RLS unit tests."""
    from facerestore.nn.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=w_dim, w_dim=w_dim, img_resolution=resolution, channel_base=channel_base,
                  channel_max=channel_max, mapping_layers=mapping_layers).eval()
    G.estimate_w_avg(n_avg, torch.Generator().manual_seed(0))
    return G.requires_grad_(False)


def tiny_mobilestylegan(channels=(16, 16, 8), *, with_w_avg: bool = False):
    """A tiny randomly initialised MobileStyleGAN (z, w 16-d; unit-variance activations through the layers), eval
    mode; ``with_w_avg``: ``mapping.w_avg`` set to the mean of 64 mapped z (the loader's estimate, in small)."""
    import math

    from facerestore.nn import mobilestylegan as msg

    torch.manual_seed(0)
    G = msg.Generator(z_dim=16, w_dim=16, mapping_layers=2, channels=channels)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if (name.startswith("mapping") and name.endswith("weight")) or "affine.weight" in name:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))
            elif name.endswith("affine.bias"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn_like(p) * (1.0 if "weight" in name else 0.1))
        for m in G.synthesis._conv_modules():
            m.noise_const.normal_()
        if with_w_avg:
            G.mapping.w_avg.copy_(G.mapping(torch.randn(64, 16)).mean(0))
    return G.eval()
