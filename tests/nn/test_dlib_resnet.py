"""dlib's face recognition ResNet in PyTorch: equal to dlib's own descriptors, read safely, differentiable."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerestore.faces import dlib_models
from facerestore.faces.detect import as_uint8_rgb, detect_faces
from facerestore.nn.backbones.dlib_resnet import (
    DlibFaceResNet,
    _padded_add,
    load_dlib_face_resnet,
    read_dlib_face_resnet,
)

RECOGNISER = "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def net():
    return load_dlib_face_resnet()


@pytest.fixture(scope="module")
def chips(astronaut):
    """Three 150 px dlib chips (uint8): the astronaut, its mirror image, and a blurred + JPEG'd copy."""
    dlib = dlib_models.import_dlib()
    img = as_uint8_rgb(astronaut)
    out = []
    for im in (img, np.ascontiguousarray(img[:, ::-1])):
        det = detect_faces(im, "hog", upsample=0)[0]
        shape = dlib_models.shape_predictor(5)(im, dlib.rectangle(*[int(v) for v in det.box[:2]],
                                                                  int(det.box[2]) - 1, int(det.box[3]) - 1))
        out.append(dlib.get_face_chip(im, shape, 150, 0.25))
    blurred = cv2.GaussianBlur(out[0], (0, 0), 2.0)
    out.append(cv2.imdecode(cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_UNCHANGED))
    return out


def _tensor(chip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chip)).permute(2, 0, 1).float().div(255)


def test_embeddings_equal_dlibs_descriptors(net, chips):
    x = torch.stack([_tensor(c) for c in chips])
    with torch.no_grad():
        ours = net(x).double().numpy()
    rec = dlib_models.face_recognizer()
    ref = np.stack([np.asarray(rec.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])
    assert np.abs(ours - ref).max() < 1e-4
    # the three chips are genuinely different inputs (the test is not comparing one vector three times)
    assert np.linalg.norm(ref[0] - ref[1]) > 0.05 and np.linalg.norm(ref[0] - ref[2]) > 0.05


def test_layout_matches_the_file():
    state = read_dlib_face_resnet(dlib_models.model_path(RECOGNISER))
    net = DlibFaceResNet()
    assert set(state) == set(net.state_dict())
    assert all(state[k].shape == v.shape for k, v in net.state_dict().items())
    convs = [k for k in state if k.endswith(".weight") and state[k].dim() == 4]
    assert len(convs) == 29 and state["fc.weight"].shape == (128, 256)
    # dlib's input-layer means, read from the file
    assert state["pixel_mean"].flatten().tolist() == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    # every float of the file's parameter tensors is used once: the file holds exactly this many parameters
    assert sum(v.numel() for k, v in state.items() if k != "pixel_mean") == sum(
        p.numel() for p in net.parameters())


def test_reader_rejects_other_and_truncated_files(tmp_path):
    with pytest.raises(ValueError):
        read_dlib_face_resnet(dlib_models.model_path("shape_predictor_5_face_landmarks.dat"))
    data = dlib_models.model_path(RECOGNISER).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        read_dlib_face_resnet(cut)
    # the loader every caller uses: one InputError line whatever the cut (half way, or in the first bytes)
    from facerestore.errors import InputError
    from facerestore.nn.backbones.dlib_resnet import load_dlib_face_resnet

    for size in (len(data) // 2, 64, 300):
        cut.write_bytes(data[:size])
        with pytest.raises(InputError) as info:
            load_dlib_face_resnet(cut)
        assert "\n" not in str(info.value)


def test_padded_add_zero_pads_to_the_larger_size():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 3, 2, 4), 2.0)
    s = _padded_add(a, b)
    assert s.shape == (1, 3, 3, 4)
    assert s[0, :2, :2, :3].eq(3).all() and s[0, 2, :2].eq(2).all() and s[0, :2, 2, :3].eq(1).all()
    assert s[0, 2, 2].eq(0).all() and s[0, :2, 2, 3].eq(0).all()


def test_embedding_is_differentiable(net, chips):
    # directional derivative against central differences, in float64
    n64 = DlibFaceResNet().double()
    n64.load_state_dict(net.state_dict())
    x = _tensor(chips[2]).double()[None]
    # break the exact ties of flat 8-bit regions (max-pool is not differentiable at a tie)
    x = (x + 0.01 * torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    x.requires_grad_(True)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d /= d.norm()  # a small step: the ReLU and max-pool kinks stay where they are
    w = torch.randn(128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (n64(x)[0] @ w).backward()
    analytic = float((x.grad * d).sum())
    eps = 1e-6
    with torch.no_grad():
        numeric = float((n64(x + eps * d)[0] @ w - n64(x - eps * d)[0] @ w) / (2 * eps))
    assert analytic == pytest.approx(numeric, rel=1e-4)
    assert all(not p.requires_grad for p in net.parameters()) and not net.training
