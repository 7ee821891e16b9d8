"""Pretrained backbones re-implemented with the upstream parameter layouts (no torchvision).

Each architecture's state-dict keys and shapes equal the upstream checkpoint's, so the zoo files
load strictly:

| class | upstream file (zoo entry) |
|---|---|
| ``AlexNet`` | torchvision ``alexnet-owt-7be5be79.pth`` (``alexnet-imagenet``) |
| ``VGG(16)`` / ``VGG(19)`` | torchvision ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth`` |
| ``SqueezeNet11`` | torchvision ``squeezenet1_1-b8a52dc0.pth`` |
| ``FIDInceptionV3`` | pytorch-fid ``pt_inception-2015-12-05-6726825d.pth`` (``pt-inception-fid``) |
| ``DlibFaceResNet`` | dlib ``dlib_face_recognition_resnet_model_v1.dat`` (``face_recognition_models``; dlib format) |

The ``load_*`` helpers build a network and fill it from the zoo cache (or from ``weights``, a path
that overrides the cache); they never download.

    >>> from facerestore.nn.backbones import VGGFeatures
    >>> vgg = VGGFeatures(["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], depth=19)
    >>> feats = vgg(img)          # {"relu1_1": (B, 64, H, W), ...}; img in [0, 1]
"""

from __future__ import annotations

import os

from facerestore.nn.backbones._base import SequentialFeatures, freeze, load_exact, load_weights_file
from facerestore.nn.backbones.alexnet import ALEXNET_LAYERS, AlexNet
from facerestore.nn.backbones.dlib_resnet import DlibFaceResNet, load_dlib_face_resnet, read_dlib_face_resnet
from facerestore.nn.backbones.inception import BLOCK_DIMS, FIDInceptionV3
from facerestore.nn.backbones.squeezenet import SQUEEZENET_LAYERS, SqueezeNet11
from facerestore.nn.backbones.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG,
    L2Pool2d,
    VGGFeatures,
    imagenet_normalize,
    vgg_layer_names,
)
from facerestore.nn.backbones.weights import resolve_weights, zoo_file

PathLike = str | os.PathLike


def load_alexnet(weights: PathLike | None = None, classifier: bool = False) -> AlexNet:
    """ImageNet AlexNet from ``weights`` or the zoo entry "alexnet-imagenet"."""
    net = AlexNet(classifier=classifier)
    path = resolve_weights(["alexnet-imagenet"], weights)["alexnet-imagenet"]
    load_exact(
        net,
        load_weights_file(path),
        ignore_prefixes=() if classifier else ("classifier.",),
        source=f"AlexNet weights {path}",
    )
    return net


def load_vgg(depth: int = 19, weights: PathLike | None = None, pool: str = "max", classifier: bool = False) -> VGG:
    """ImageNet VGG16/19 from ``weights`` or the zoo entry "vgg{depth}-imagenet"."""
    name = f"vgg{depth}-imagenet"
    net = VGG(depth, pool=pool, classifier=classifier)
    net.load_torchvision(load_weights_file(resolve_weights([name], weights)[name]))
    return net


def load_squeezenet(weights: PathLike | None = None, classifier: bool = False) -> SqueezeNet11:
    """ImageNet SqueezeNet 1.1 from ``weights`` or the zoo entry "squeezenet1_1-imagenet"."""
    net = SqueezeNet11(classifier=classifier)
    path = resolve_weights(["squeezenet1_1-imagenet"], weights)["squeezenet1_1-imagenet"]
    load_exact(
        net,
        load_weights_file(path),
        ignore_prefixes=() if classifier else ("classifier.",),
        source=f"SqueezeNet weights {path}",
    )
    return net


def load_fid_inception(weights: PathLike | None = None, **kwargs) -> FIDInceptionV3:
    """pytorch-fid's Inception v3 from ``weights`` or the zoo entry "pt-inception-fid"."""
    net = FIDInceptionV3(**kwargs)
    path = resolve_weights(["pt-inception-fid"], weights)["pt-inception-fid"]
    state = load_weights_file(path)
    # Checkpoints written before PyTorch 0.4.1 carry no BatchNorm step counters; they are unused in
    # eval mode, so accept their absence.
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, v)
    load_exact(net, state, source=f"FID Inception weights {path}")
    return net


__all__ = [
    "ALEXNET_LAYERS",
    "BLOCK_DIMS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SQUEEZENET_LAYERS",
    "VGG",
    "AlexNet",
    "DlibFaceResNet",
    "FIDInceptionV3",
    "L2Pool2d",
    "SequentialFeatures",
    "SqueezeNet11",
    "VGGFeatures",
    "freeze",
    "imagenet_normalize",
    "load_alexnet",
    "load_dlib_face_resnet",
    "load_exact",
    "load_fid_inception",
    "load_squeezenet",
    "load_vgg",
    "load_weights_file",
    "read_dlib_face_resnet",
    "resolve_weights",
    "vgg_layer_names",
    "zoo_file",
]
