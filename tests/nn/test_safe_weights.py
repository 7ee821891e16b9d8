"""facerestore.nn.safe_weights.meta_shapes: the shapes a weight file must have, computed without memory and,
for the default restorer, without the 1.5 s first use of torch._dynamo that random draws on the meta device cost."""

from __future__ import annotations

import subprocess
import sys

import torch

from facerestore.methods.ispl.generator import ISPLConfig, ISPLGenerator
from facerestore.nn.blocks import SNConv2d
from facerestore.nn.safe_weights import meta_shapes


def test_meta_shapes_equal_a_real_build():
    """Against the module built on the CPU: the same names and shapes, spectral-norm vectors included."""
    cfg = ISPLConfig(ngf=8, max_channels=32)
    real = {k: tuple(v.shape) for k, v in ISPLGenerator(config=cfg).state_dict().items()}
    assert meta_shapes(lambda: ISPLGenerator(config=cfg), "test") == real
    assert meta_shapes(lambda: SNConv2d(3, 5, 3), "test") == {"weight_orig": (5, 3, 3, 3), "bias": (5,),
                                                                "weight_u": (5,), "weight_v": (27,)}


def test_random_draws_on_meta_do_not_import_dynamo():
    """Checked in a fresh interpreter (this one may have imported it already)."""
    code = ("import sys; from facerestore.nn.safe_weights import meta_shapes; "
            "from facerestore.nn.blocks import SNConv2d; meta_shapes(lambda: SNConv2d(3, 5, 3), 'x'); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_draws_outside_meta_shapes_are_untouched():
    """The mode is active only while meta_shapes builds: a real build afterwards draws real numbers."""
    meta_shapes(lambda: SNConv2d(3, 5, 3), "test")
    torch.manual_seed(0)
    u = SNConv2d(3, 5, 3).weight_u
    torch.manual_seed(0)
    assert torch.equal(u, SNConv2d(3, 5, 3).weight_u) and torch.isclose(u.norm(), torch.tensor(1.0))
