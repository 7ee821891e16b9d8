"""The three facial priors of MFPSNet, made from our face pipeline (the authors never released how they made theirs).

All functions take FFHQ-aligned face crops (B, 3, S, S) in [0, 1] (MFPSNet's iteration-1 output at inference)
or their landmarks in crop pixels.

- Parsing map (semantic prior), :func:`mesh_parsing_labels` / :func:`mesh_parsing_map`: CelebAMask-HQ's
  19-class layout (``faces.priors.CELEBAMASK_CLASSES``) rasterised from MediaPipe Face Mesh's 468 dense points:
  skin = inside the face oval (hairline to chin, so the forehead is skin), nose = convex hull of the nose points
  (:data:`NOSE_POINTS`, the bridge from between the brows to the alae and the columella), brows and eyes =
  their mesh rings, upper / lower lip = outer lip line minus the inner one, split at the mouth corners, mouth
  = inside the inner lip line. "l_*" is the part with the smaller x in the image (the subject's right, as
  ``faces.priors``). Not available without a segmentation network, so always empty: eyeglasses, ears,
  earrings, hair, hat, necklace, neck, cloth (:data:`EMPTY_CLASSES`); background = everything else. When the
  Face Mesh weights are not downloaded, the 68-landmark polygons of ``faces.priors.parsing_map`` stand in (a
  warning says so).
- Heatmaps (geometric prior): ``faces.priors.landmark_heatmaps`` of dlib's 68 landmarks: 68 Gaussians plus the
  eyes, nose and mouth channels = 71 channels.
- Component dictionaries (reference prior), :class:`ComponentDictionary`, built as DFDNet does: features of
  high-quality left-eye, right-eye, nose and mouth crops clustered by K-means into K atoms per component; at
  run time each component of the face is replaced by its nearest atom's features, placed back at the
  component's box of a (256, S, S) map (zeros elsewhere). Feature extractor (no ImageNet VGG exists here):
  MobileFaceNet (zoo ``mobilefacenet``, a face-identity network) applied to each crop resized to 112 px; the
  features are its 128-channel maps at stride 8 and at stride 16 (upsampled x2), concatenated: 256 channels at
  14 x 14, i.e. two scales. This is an identity network run on parts of faces, not the VGG features DFDNet
  clusters; component boxes are squares at the landmark centres of side 0.22 S (eyes), 0.25 S (nose) and
  0.35 S (mouth).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facerestore.errors import InputError

__all__ = ["COMPONENTS", "EMPTY_CLASSES", "NOSE_POINTS", "ComponentDictionary", "PriorExtractor", "component_boxes",
           "component_features", "kmeans", "load_feature_net", "mesh_parsing_labels", "mesh_parsing_map"]

# Face Mesh indices of the nose (bridge from between the brows, tip, alae, columella)
NOSE_POINTS = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115, 48,
               64, 129, 358, 49, 279, 122, 351)
EMPTY_CLASSES = ("eye_g", "l_ear", "r_ear", "ear_r", "hair", "hat", "neck_l", "neck", "cloth")
COMPONENTS: dict[str, tuple[tuple[int, ...], float]] = {  # 68-landmark indices, box side / crop side
    "left_eye": (tuple(range(36, 42)), 0.22),
    "right_eye": (tuple(range(42, 48)), 0.22),
    "nose": (tuple(range(27, 36)), 0.25),
    "mouth": (tuple(range(48, 68)), 0.35),
}
FEATURE_CHANNELS = 256
FEATURE_SIDE = 14


def mesh_parsing_labels(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 CelebAMask-HQ labels from (468, 2+) Face Mesh points in crop pixels."""
    import cv2

    from facerestore.faces import mesh
    from facerestore.faces.priors import CELEBAMASK_INDEX as idx

    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[0] != mesh.NUM_POINTS:
        raise InputError(f"mesh parsing needs (468, 2) points, got {pts.shape}")
    xy = pts[:, :2]
    out = np.zeros((size, size), np.uint8)

    def fill(ring, value):
        cv2.fillPoly(out, [np.round(xy[list(ring)] * 16).astype(np.int32)], int(value), cv2.LINE_8, shift=4)

    fill(mesh.FACE_OVAL, idx["skin"])
    hull = cv2.convexHull(np.round(xy[list(NOSE_POINTS)] * 16).astype(np.int32))
    cv2.fillPoly(out, [hull], idx["nose"], cv2.LINE_8, shift=4)
    fill(mesh.RIGHT_EYEBROW, idx["l_brow"])  # the subject's right = smaller image x
    fill(mesh.LEFT_EYEBROW, idx["r_brow"])
    fill(mesh.RIGHT_EYE, idx["l_eye"])
    fill(mesh.LEFT_EYE, idx["r_eye"])
    outer, inner = list(mesh.LIPS_OUTER), list(mesh.LIPS_INNER)
    lower_outer, upper_outer = outer[:11], outer[10:] + outer[:1]  # 61 .. 291 along the bottom, 291 .. 61 top
    lower_inner, upper_inner = inner[:11], inner[10:] + inner[:1]
    fill(upper_outer + upper_inner[::-1], idx["u_lip"])
    fill(lower_outer + lower_inner[::-1], idx["l_lip"])
    fill(inner, idx["mouth"])
    return out


def mesh_parsing_map(points: np.ndarray, size: int, soft: float = 0.0) -> np.ndarray:
    """(19, size, size) float32 one-hot of :func:`mesh_parsing_labels` (``soft`` > 0: Gaussian-blurred and
    renormalised, empty classes stay empty)."""
    labels = mesh_parsing_labels(points, size)
    out = (labels[None] == np.arange(19, dtype=np.uint8)[:, None, None]).astype(np.float32)
    if soft > 0:
        import cv2

        for c in range(19):
            if out[c].any():
                out[c] = cv2.GaussianBlur(out[c], (0, 0), sigmaX=soft, sigmaY=soft, borderType=cv2.BORDER_REPLICATE)
        out /= np.maximum(out.sum(0, keepdims=True), 1e-12)
    return out


# --------------------------------------------------------------------------------------------- dictionaries


def component_boxes(landmarks68: np.ndarray, size: int) -> dict[str, tuple[int, int, int]]:
    """Component -> (x0, y0, side) square boxes in crop pixels (may extend past the crop)."""
    lm = np.asarray(landmarks68, np.float64)
    out = {}
    for name, (idx, frac) in COMPONENTS.items():
        side = max(round(frac * size), 4)
        cx, cy = lm[list(idx)].mean(0)
        out[name] = (round(cx - side / 2), round(cy - side / 2), side)
    return out


def _crop(image: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    """(3, S, S) -> (3, side, side) crop, zero padding outside the image."""
    x0, y0, side = box
    s = image.shape[-1]
    pad = max(0, -x0, -y0, x0 + side - s, y0 + side - s)
    img = F.pad(image, (pad, pad, pad, pad)) if pad else image
    return img[:, y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]


class _Features(torch.nn.Module):
    """MobileFaceNet's stride-8 and stride-16 maps of a 112 px input, concatenated (256 x 14 x 14)."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.conv0b(n.dw0(n.conv0(x)))
        s8 = None
        for i, b in enumerate(n.blocks):
            x = b(x)
            if i == 11:  # end of the stride-8 stage
                s8 = x
        s16 = F.interpolate(x, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([s8, s16], 1)


def load_feature_net(device: str | torch.device = "cpu") -> _Features:
    """The component feature extractor (MobileFaceNet from the zoo cache; WeightsMissingError otherwise)."""
    from facerestore import zoo
    from facerestore.nn.mobilefacenet import load_mobilefacenet

    return _Features(load_mobilefacenet(zoo.weights_path("mobilefacenet"), device))


def component_features(images: torch.Tensor, landmarks: np.ndarray, net: torch.nn.Module,
                       ) -> dict[str, torch.Tensor]:
    """Component -> (B, 256, 14, 14) features of the crops of each image (L2-normalised per crop)."""
    out: dict[str, list[torch.Tensor]] = {n: [] for n in COMPONENTS}
    size = images.shape[-1]
    for img, lm in zip(images, landmarks):
        for name, box in component_boxes(lm, size).items():
            crop = F.interpolate(_crop(img.float(), box)[None], size=(112, 112), mode="bilinear", align_corners=False)
            out[name].append(crop)
    feats = {}
    for name, crops in out.items():
        f = net(torch.cat(crops).to(next(net.parameters()).device))
        feats[name] = f / f.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]
    return feats


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """(k, D) centroids of the rows of (N, D) ``x``: k-means++ seeding, then Lloyd iterations (deterministic)."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"k-means needs 1 <= k <= {n} samples, got k={k}")
    g = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(n, (1,), generator=g))]]
    for _ in range(1, k):
        d = torch.cdist(x, torch.stack(centres)).min(1).values ** 2
        p = d / d.sum() if float(d.sum()) > 0 else torch.full((n,), 1.0 / n)
        centres.append(x[int(torch.multinomial(p, 1, generator=g))])
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if torch.equal(new, c):
            break
        c = new
    return c


class ComponentDictionary:
    """K atoms of (256, 14, 14) features per component (see the module docstring)."""

    def __init__(self, atoms: dict[str, torch.Tensor]) -> None:
        missing = set(COMPONENTS) - set(atoms)
        if missing:
            raise InputError(f"component dictionary lacks {sorted(missing)}")
        self.atoms = {n: a.float() for n, a in atoms.items()}

    @classmethod
    def build(cls, images: torch.Tensor, landmarks: np.ndarray, net: torch.nn.Module, k: int = 16,
              seed: int = 0) -> ComponentDictionary:
        """K-means over the features of the components of high-quality aligned faces."""
        feats = component_features(images, landmarks, net)
        return cls({n: kmeans(f.flatten(1).cpu(), min(k, f.shape[0]), seed=seed).view(-1, *f.shape[1:])
                    for n, f in feats.items()})

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        save_file({n: a.contiguous() for n, a in self.atoms.items()}, str(path))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ComponentDictionary:
        from facerestore.nn.safe_weights import load_safetensors

        return cls(load_safetensors(Path(path), "component dictionary"))

    def prior_map(self, images: torch.Tensor, landmarks: np.ndarray, net: torch.nn.Module) -> torch.Tensor:
        """(B, 256, S, S): each component's nearest atom, resized into its box; zeros elsewhere."""
        b, _, s, _ = images.shape
        out = torch.zeros(b, FEATURE_CHANNELS, s, s)
        feats = component_features(images, landmarks, net)
        for name, f in feats.items():
            atoms = self.atoms[name]
            nearest = torch.cdist(f.flatten(1).cpu(), atoms.flatten(1)).argmin(1)
            for i in range(b):
                x0, y0, side = component_boxes(landmarks[i], s)[name]
                patch = F.interpolate(atoms[nearest[i]][None], size=(side, side), mode="bilinear",
                                      align_corners=False)[0]
                xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, s), min(y0 + side, s)
                if xb > xa and yb > ya:
                    out[i, :, ya:yb, xa:xb] = patch[:, ya - y0:yb - y0, xa - x0:xb - x0]
        return out


# --------------------------------------------------------------------------------------------- all three


class PriorExtractor:
    """``(B, 3, S, S)`` aligned faces -> {"parse", "heat", "dict"} tensors for MFPSNet's second iteration.

    Landmarks: dlib's 68-point predictor in the aligned face box. Parsing: Face Mesh when its weights are
    cached, else the 68-landmark polygons (announced once). Dictionary: only with ``dictionary`` (a
    :class:`ComponentDictionary` or its safetensors file); without one the dictionary prior is absent (zeros).
    """

    def __init__(self, dictionary: ComponentDictionary | str | os.PathLike | None = None, soft: float = 1.0,
                 use_mesh: bool | None = None) -> None:
        from facerestore import zoo

        self.dictionary = (ComponentDictionary.load(dictionary) if isinstance(dictionary, (str, os.PathLike))
                           else dictionary)
        self.soft = soft
        self.use_mesh = zoo.is_available("facemesh-468") if use_mesh is None else use_mesh
        if use_mesh is None and not self.use_mesh:
            warnings.warn("mfpsnet priors: Face Mesh weights are not downloaded; parsing maps come from 68-landmark "
                          "polygons (`facerestore models download facemesh-468`)", stacklevel=2)
        self._mesher = None
        self._feat = None

    def landmarks(self, images: torch.Tensor) -> np.ndarray:
        from facerestore.faces.detect import aligned_face_box, predict_landmarks

        box = aligned_face_box(images.shape[-1])
        arr = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return np.stack([predict_landmarks(a, box, 68) for a in arr])

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from facerestore.faces.priors import landmark_heatmaps, parsing_map

        s = images.shape[-1]
        lm = self.landmarks(images)
        heat = torch.from_numpy(landmark_heatmaps(lm, s))
        if self.use_mesh:
            from facerestore.faces.mesh import FaceMesher

            if self._mesher is None:
                self._mesher = FaceMesher()
            arr = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            maps = []
            for a, l68 in zip(arr, lm):
                res = self._mesher(a, [l68])[0]
                maps.append(mesh_parsing_map(res.xy, s, self.soft) if res is not None
                            else parsing_map(l68, s, soft=self.soft))
            parse = torch.from_numpy(np.stack(maps))
        else:
            parse = torch.from_numpy(parsing_map(lm, s, soft=self.soft))
        out = {"parse": parse.to(images), "heat": heat.to(images)}
        if self.dictionary is not None:
            if self._feat is None:
                self._feat = load_feature_net()
            out["dict"] = self.dictionary.prior_map(images.detach().float().cpu(), lm, self._feat).to(images)
        return out
