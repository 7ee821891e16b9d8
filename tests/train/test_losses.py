"""Shared training losses: the dlib identity loss and its differentiable chip crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerestore.faces import dlib_models
from facerestore.faces.align import align_face
from facerestore.faces.detect import aligned_face_box, as_uint8_rgb, detect_faces
from facerestore.faces.identity import DLIB5_FFHQ_512, aligned_chip_affine, dlib_chip_affine
from facerestore.train.losses import IdentityLoss, affine_crop


@pytest.fixture(scope="module")
def loss():
    return IdentityLoss()


@pytest.fixture(scope="module")
def aligned(astronaut):
    """(256, 256, 3) uint8 FFHQ-aligned crop of the astronaut, and a degraded copy."""
    det = detect_faces(astronaut, "hog", upsample=0)[0]
    crop = as_uint8_rgb(align_face(astronaut, det.landmarks5, size=256).crop)
    small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    return crop, np.ascontiguousarray(cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC))


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)


def test_chip_affine_matches_dlibs_crop():
    # an image whose red/green channels are the pixel's x/y coordinates: dlib's chip then holds, per
    # pixel, where it sampled from (bilinear interpolation of a linear ramp is exact up to 8-bit rounding)
    dlib = dlib_models.import_dlib()
    pts = DLIB5_FFHQ_512 / 2 + np.array([3.0, -2.0])
    yy, xx = np.mgrid[0:256, 0:256]
    ramp = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)
    det = dlib.full_object_detection(dlib.rectangle(0, 0, 255, 255), [dlib.point(round(x), round(y)) for x, y in pts])
    chip = dlib.get_face_chip(ramp, det, 150, 0.25).astype(np.float64)[..., :2]
    m = dlib_chip_affine(pts)
    v, u = np.mgrid[0:150, 0:150]
    ours = np.einsum("ij,hwj->hwi", m, np.stack([u, v, np.ones_like(u)], -1))
    inside = (ours > 1).all(-1) & (ours < 254).all(-1)
    assert inside.mean() > 0.9
    err = (ours - chip)[inside]
    assert err.min() > -0.01 and err.max() < 1.0  # dlib truncates its output to integers
    assert abs(err.mean() - 0.5) < 0.05
    # the template chip scales with the crop size
    np.testing.assert_allclose(aligned_chip_affine(128), aligned_chip_affine(512) / 4)


def test_affine_crop_equals_opencv_warp():
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    m = np.array([[0.9, 0.2, 5.3], [-0.15, 1.1, 3.7]])  # output pixel -> input pixel
    ref = cv2.warpAffine(img, m, (24, 24), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    ours = affine_crop(x, torch.from_numpy(m).float(), 24)[0].permute(1, 2, 0).numpy()
    inner = (slice(2, -2), slice(2, -2))  # away from the border, where zero padding conventions differ
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-2)
    # a batch of per-image affines equals cropping each image on its own
    xb = torch.cat([x, x.flip(-1)])
    mb = torch.stack([torch.from_numpy(m).float(), torch.eye(2, 3)])
    both = affine_crop(xb, mb, 24)
    torch.testing.assert_close(both[0], affine_crop(x, mb[0], 24)[0])
    torch.testing.assert_close(both[1], affine_crop(x.flip(-1), mb[1], 24)[0])


def test_identity_loss_is_fed_on_dlibs_route(loss, aligned):
    crop, degraded = aligned
    assert float(loss(_t(crop), _t(crop))) == 0.0
    value = float(loss(_t(degraded), _t(crop)))
    # reference: dlib's own descriptors of both images, on the chip dlib cuts for the target's landmarks
    dlib = dlib_models.import_dlib()
    b = aligned_face_box(256)
    shape = dlib_models.shape_predictor(5)(crop, dlib.rectangle(*(round(float(v)) for v in b[:2]),
                                                                round(float(b[2])) - 1, round(float(b[3])) - 1))
    rec = dlib_models.face_recognizer()
    ref = np.linalg.norm(np.asarray(rec.compute_face_descriptor(degraded, shape, 0, 0.25))
                         - np.asarray(rec.compute_face_descriptor(crop, shape, 0, 0.25)))
    assert ref > 0.1  # the degradation moves the identity embedding
    assert value == pytest.approx(ref, abs=0.02)
    # weight scales; template chips give a nearby value
    assert float(IdentityLoss(weight=3.0, net=loss.net)(_t(degraded), _t(crop))) == pytest.approx(3 * value)
    assert float(IdentityLoss(chip="template", net=loss.net)(_t(degraded), _t(crop))) == pytest.approx(ref, abs=0.15)
    with pytest.raises(ValueError, match="chip"):
        IdentityLoss(chip="nose", net=loss.net)


def test_identity_loss_gradient_reaches_the_prediction_only(loss, aligned):
    crop, degraded = aligned
    pred = _t(degraded).requires_grad_(True)
    target = _t(crop).requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert target.grad is None
    # one descent step along the gradient lowers the loss
    with torch.no_grad():
        stepped = pred - (4 / 255) * pred.grad / pred.grad.abs().max()  # at most 4 levels per pixel
    assert float(loss(stepped, target)) < float(loss(pred.detach(), target))
