"""CUDA checks (skipped without a CUDA device): what a GPU training run and GPU users rely on.

- the ISPL adapter trains under bf16 autocast on CUDA (the amp path the trainer offers: finite losses, weights
  that move and stay finite);
- generator faces rendered on CUDA (``data.synth.store: memory`` on a GPU) equal the CPU's up to float rounding;
- the default restorer on CUDA (float32 and float16) matches the CPU's float32 output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_face_dataset

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


def test_ispl_trains_under_bf16_autocast_on_cuda(tmp_path):
    from facerestore.methods import training_adapter
    from facerestore.train import load_config, train

    make_face_dataset(tmp_path / "hq", n=6)
    cfg = load_config(ROOT / "configs" / "tiny-ispl.yaml", [
        f"data.roots=[{tmp_path / 'hq'}]", f"output_dir={tmp_path / 'runs'}", "device=cuda", "amp=bf16",
        "steps=3", "val_every=0", "ckpt_every=0", "log_every=1"])
    res = train(cfg, adapter=training_adapter("ispl"), progress=False)
    logs = [json.loads(x) for x in (tmp_path / "runs" / cfg.name / "metrics.jsonl").read_text().splitlines()]
    assert res["finished"] and len([x for x in logs if x["kind"] == "train"]) == 3
    for x in logs:
        assert all(np.isfinite(v) for k, v in x.items() if k.startswith("loss/")), x
    from safetensors.torch import load_file

    w = load_file(res["weights"])
    assert all(torch.isfinite(v).all() for v in w.values())


def test_synth_faces_on_cuda_equal_the_cpu_render():
    from facerestore.train.synth import render_synth

    spec = {"count": 4, "weights": "builtin:stylegan2-face-64.safetensors", "seed": 7}
    cpu = render_synth(spec, 64, "cpu").float()
    gpu = render_synth(spec, 64, "cuda").float()
    assert float((cpu - gpu).abs().max()) <= 2.0  # grey levels: float rounding may cross a quantisation step
    assert float((cpu - gpu).abs().mean()) < 0.05


def test_default_restorer_on_cuda_matches_the_cpu(astronaut_tensor):
    from facerestore.methods import load_restorer

    x = astronaut_tensor[:, :, 30:286, 130:386]
    ref = load_restorer("ispl").restore(x)
    out32 = load_restorer("ispl", device="cuda").restore(x.cuda()).cpu()
    out16 = load_restorer("ispl", device="cuda", half=True).restore(x.cuda().half()).float().cpu()
    assert float((out32 - ref).abs().max()) < 2e-3
    assert float((out16 - ref).abs().mean()) < 0.02
