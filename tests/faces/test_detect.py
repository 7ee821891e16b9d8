"""Face detection and landmarks (facerestore.faces.detect, dlib_models).

References are independent of our code: positions annotated by hand on zoomed views of the images,
raw dlib calls, mirror/shift/scale relations of the image, and closed-form index arithmetic.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerestore.errors import InputError, WeightsMissingError
from facerestore.faces import dlib_models
from facerestore.faces.detect import (
    DlibDetector,
    FaceDetection,
    aligned_face_box,
    as_uint8_rgb,
    create_detector,
    detect_faces,
    face_box_from_landmarks5,
    landmarks_68_to_5,
    list_detectors,
    predict_landmarks,
    select_faces,
    sort_detections,
)

# Annotated by hand on an 8x zoom of examples/astronaut.png: eye (iris) centres, nose tip, mouth corners.
ASTRONAUT_5 = np.array([[203.0, 101.0], [246.0, 104.0], [225.5, 127.5], [203.5, 140.5], [243.5, 141.0]])


def assert_near_annotation(lm5: np.ndarray) -> None:
    # eye centres are well defined; the nose tip and the corners of a smiling mouth less so (inter-ocular 43 px)
    err = np.linalg.norm(lm5 - ASTRONAUT_5, axis=1)
    assert err[:2].max() < 3.0 and err.max() < 6.0, err


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astro_det(astronaut):
    dets = detect_faces(astronaut, "hog", upsample=0)
    assert len(dets) == 1
    return dets[0]


# --- model files -------------------------------------------------------------------------------------------


def test_model_paths_exist_and_are_found_without_importing_package():
    import sys

    for name in dlib_models.MODEL_FILES:
        p = dlib_models.model_path(name)
        assert p.is_file() and p.name == name and p.stat().st_size > 100_000
    assert "face_recognition_models" not in sys.modules  # its __init__ needs pkg_resources


def test_model_path_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError):
        dlib_models.model_path("nope.dat")
    from facerestore.zoo import dlib_files

    monkeypatch.setattr(dlib_files, "models_dir", lambda: None)
    monkeypatch.setenv("FACERESTORE_DLIB_MODELS", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="shape_predictor_5"):
        dlib_models.model_path("shape_predictor_5_face_landmarks.dat")
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"x")
    assert dlib_models.model_path("shape_predictor_5_face_landmarks.dat") == tmp_path / (
        "shape_predictor_5_face_landmarks.dat")


# --- conversions -------------------------------------------------------------------------------------------


def test_as_uint8_rgb_matches_pil(astronaut, astronaut_path):
    from PIL import Image

    u8 = as_uint8_rgb(astronaut)
    assert u8.dtype == np.uint8 and u8.shape == (512, 512, 3) and u8.flags.c_contiguous
    assert np.array_equal(u8, np.asarray(Image.open(astronaut_path).convert("RGB")))
    # round half up, like facerestore.io.quantize
    assert as_uint8_rgb(np.full((1, 1, 3), 0.5 / 255, np.float32))[0, 0, 0] == 1
    gray = as_uint8_rgb(astronaut[:, :, 0])
    assert gray.shape == (512, 512, 3) and np.array_equal(gray[:, :, 0], gray[:, :, 2])
    with pytest.raises(InputError):
        as_uint8_rgb(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(InputError):
        as_uint8_rgb(np.zeros((4, 4, 3), np.int32))


def test_landmarks_68_to_5_indices():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 500, (68, 2))
    out = landmarks_68_to_5(lm)
    assert np.allclose(out[0], lm[36:42].sum(0) / 6)
    assert np.allclose(out[1], lm[42:48].sum(0) / 6)
    assert np.array_equal(out[2:], lm[[30, 48, 54]])
    with pytest.raises(ValueError):
        landmarks_68_to_5(lm[:60])


# --- ordering and selection (pure) ---------------------------------------------------------------------------


def _fake(x0, y0, side, score):
    box = np.array([x0, y0, x0 + side, y0 + side], float)
    return FaceDetection(box, score, np.zeros((5, 2)))


def test_sort_and_select_are_deterministic():
    dets = [_fake(300, 0, 50, 1.0), _fake(100, 0, 80, 2.0), _fake(10, 0, 50, 1.0), _fake(200, 200, 120, 0.5)]
    rng = np.random.default_rng(1)
    orders = {tuple(d.box[0] for d in sort_detections([dets[i] for i in rng.permutation(4)])) for _ in range(10)}
    assert orders == {(100.0, 10.0, 300.0, 200.0)}  # score desc, then x
    assert select_faces(dets, "largest", (400, 400, 3))[0].box[0] == 200
    # centre of a 400x400 image is (199.5, 199.5); box centres: (324.5,24.5) (139.5,39.5) (34.5,24.5) (259.5,259.5)
    assert select_faces(dets, "center", (400, 400, 3))[0].box[0] == 200
    assert select_faces(dets, "center", (100, 100, 3))[0].box[0] == 10
    assert len(select_faces(dets, "all", (400, 400, 3))) == 4
    assert select_faces([], "largest", (4, 4, 3)) == []
    with pytest.raises(InputError):
        select_faces(dets, "biggest", (400, 400, 3))


# --- dlib on the bundled photo -------------------------------------------------------------------------------


def test_astronaut_one_face_landmarks_match_hand_annotation(astro_det):
    d = astro_det
    assert d.detector == "dlib-hog" and d.landmarks68.shape == (68, 2) and d.landmarks5.shape == (5, 2)
    assert_near_annotation(d.landmarks5)
    # all 68 points inside the box grown by 20%, jaw below the eyes, brows above them
    b, lm = d.box, d.landmarks68
    g = 0.2 * (b[2] - b[0])
    assert np.all((lm[:, 0] > b[0] - g) & (lm[:, 0] < b[2] + g) & (lm[:, 1] > b[1] - g) & (lm[:, 1] < b[3] + g))
    assert lm[8, 1] > lm[36:48, 1].max() and lm[17:27, 1].max() < lm[36:48, 1].mean()


def test_raw_dlib_agrees(astronaut, astro_det):
    dlib = dlib_models.import_dlib()
    img = as_uint8_rgb(astronaut)
    rects, scores, _ = dlib.get_frontal_face_detector().run(img, 0, 0.0)
    r = rects[0]
    assert np.array_equal(astro_det.box, [r.left(), r.top(), r.right() + 1, r.bottom() + 1])
    assert astro_det.score == pytest.approx(scores[0])
    sp = dlib_models.shape_predictor(68)  # the cached dlib object (loading another copy takes 2-5 s)
    ref = np.array([(p.x, p.y) for p in sp(img, r).parts()], float)
    assert np.array_equal(astro_det.landmarks68, ref)


def test_uint8_and_float_inputs_agree(astronaut, astro_det):
    d = detect_faces(as_uint8_rgb(astronaut), "hog", upsample=0)[0]
    assert np.array_equal(d.box, astro_det.box) and np.array_equal(d.landmarks68, astro_det.landmarks68)


def test_upsample_1_finds_weak_patch_and_threshold_or_largest_removes_it(astronaut, astro_det):
    # at upsample 1 dlib's HOG also fires (score ~0.12) on the round mission patch of the suit
    dets = detect_faces(astronaut, "hog", upsample=1)
    assert len(dets) == 2 and dets[0].score > 1.0 > 0.3 > dets[1].score
    assert iou(dets[0].box, astro_det.box) > 0.7 and dets[1].box[1] > 300
    assert len(detect_faces(astronaut, DlibDetector("hog", upsample=1, threshold=0.3))) == 1
    assert iou(detect_faces(astronaut, "hog", upsample=1, select="largest")[0].box, astro_det.box) > 0.7


def test_mirror_image_mirrors_boxes_and_keeps_point_order(astronaut, astro_det):
    d = detect_faces(np.ascontiguousarray(astronaut[:, ::-1]), "hog", upsample=0)[0]
    w = astronaut.shape[1]
    assert np.allclose(d.box[[0, 2]], w - astro_det.box[[2, 0]], atol=2)
    # subject's right eye of the mirrored face = mirror of the other eye; x' = (w - 1) - x
    mirrored = astro_det.landmarks5[[1, 0, 2, 4, 3]] * [-1, 1] + [w - 1, 0]
    assert np.abs(d.landmarks5 - mirrored).max() < 2.0
    assert d.landmarks5[0, 0] < d.landmarks5[1, 0]


def test_integer_shift_moves_landmarks(astronaut, astro_det):
    dx, dy = 24, -16
    shifted = np.roll(astronaut, shift=(dy, dx), axis=(0, 1))
    d = detect_faces(shifted, "hog", upsample=0)[0]
    # the HOG box moves by the detector's grid step, the landmarks by the shift (predictor is box-robust)
    assert np.abs(d.landmarks68 - astro_det.landmarks68 - [dx, dy]).max() <= 2.0


def test_upsample_finds_small_faces_and_min_size(astronaut, astro_det):
    s = 0.3
    small = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)  # face ~27 px
    assert detect_faces(small, "hog", upsample=0) == []
    dets = detect_faces(small, "hog", upsample=1)
    assert len(dets) == 1
    # pixel-centre convention: x_small = (x + 0.5) * s - 0.5
    expected = (astro_det.landmarks5 + 0.5) * s - 0.5
    assert np.abs(dets[0].landmarks5 - expected).max() < 2.5
    assert detect_faces(small, "hog", upsample=1, min_size=40) == []
    assert detect_faces(astronaut, DlibDetector("hog", upsample=0, min_size=100)) == []


def test_max_side_maps_boxes_back(astronaut, astro_det):
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    d = detect_faces(big, DlibDetector("hog", upsample=0, max_side=512))[0]
    assert np.allclose(d.box, 2 * astro_det.box, atol=2)
    assert np.abs(d.landmarks5 - (2 * astro_det.landmarks5 + 0.5)).max() < 4


def test_five_point_mode_estimates_close_to_68_point_mode(astronaut, astro_det):
    d = detect_faces(astronaut, DlibDetector("hog", upsample=0, landmarks=5))[0]
    assert d.landmarks68 is None
    iod = np.linalg.norm(astro_det.landmarks5[0] - astro_det.landmarks5[1])
    err = np.linalg.norm(d.landmarks5 - astro_det.landmarks5, axis=1) / iod
    assert err[:2].max() < 0.1 and err.max() < 0.3
    # dlib's 5 points: corners of the subject's left eye (larger x) first, then right eye, then nose base
    d5 = predict_landmarks(astronaut, astro_det.box, 5)
    assert d5[0, 0] > d5[1, 0] > d5[3, 0] > d5[2, 0] and d5[4, 1] > d5[:4, 1].max()


def test_box_from_landmarks_resembles_hog_box(astro_det):
    assert iou(face_box_from_landmarks5(astro_det.landmarks5), astro_det.box) > 0.75
    b = aligned_face_box(512)
    assert b[0] > 80 and b[2] < 430 and abs((b[0] + b[2]) / 2 - 255.5) < 10


@pytest.mark.slow
def test_cnn_detector_astronaut(astronaut, astro_det):
    dets = detect_faces(astronaut, "cnn", upsample=0)
    assert len(dets) == 1 and dets[0].detector == "dlib-cnn"
    assert iou(dets[0].box, astro_det.box) > 0.6
    assert_near_annotation(dets[0].landmarks5)


# --- registry ------------------------------------------------------------------------------------------------


def test_registry(monkeypatch, tmp_path):
    assert {"hog", "cnn", "yunet"} <= set(list_detectors())
    d = create_detector("cnn", upsample=0)
    assert isinstance(d, DlibDetector) and d.kind == "cnn" and d.upsample == 0
    with pytest.raises(InputError, match="unknown face detector"):
        create_detector("retina")
    with pytest.raises(InputError):
        DlibDetector("hog", upsample=-1)
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="yunet"):
        create_detector("yunet")


def test_no_face_in_flat_image():
    assert detect_faces(np.full((200, 200, 3), 0.5, np.float32), "hog") == []


# --- shared photos (counts verified by looking at the images) -------------------------------------------------

# Hand-drawn face boxes (x0, y0, x1, y1) of selfie-many-people.jpg (600x604): seven people, two of them
# cut by the frame (bottom-left woman, bottom-right man) and one partly hidden (top right, glasses).
SELFIE_FACES = {
    "blonde woman, left": (0, 250, 80, 345),
    "woman, bottom left (cut)": (0, 400, 60, 570),
    "woman, centre left": (90, 300, 230, 450),
    "bearded man": (200, 130, 320, 280),
    "man, centre right": (340, 120, 490, 290),
    "man with glasses, top right": (510, 70, 600, 220),
    "man, bottom right (cut)": (470, 300, 600, 604),
}


def _match_selfie(dets):
    matched = []
    for d in dets:
        best = max(SELFIE_FACES, key=lambda k: iou(d.box, np.array(SELFIE_FACES[k], float)))
        assert iou(d.box, np.array(SELFIE_FACES[best], float)) > 0.3, (d.box, best)
        matched.append(best)
    assert len(set(matched)) == len(matched)  # no face found twice
    return matched


@pytest.mark.data
def test_couple_has_two_faces(shared_data):
    from facerestore.io import read_rgb

    img = read_rgb(shared_data / "photos" / "couple.jpg")
    dets = detect_faces(img, DlibDetector("hog", upsample=0))
    assert len(dets) == 2
    # hand-read from a view of the photo: her face centre ~(700, 950), his ~(1700, 760) in the 2280x1588 image
    centres = sorted(tuple(d.center) for d in dets)
    assert np.hypot(centres[0][0] - 700, centres[0][1] - 950) < 150
    assert np.hypot(centres[1][0] - 1700, centres[1][1] - 760) < 150
    # largest / center select one of them
    assert len(select_faces(dets, "largest", img.shape)) == 1


@pytest.mark.data
def test_selfie_hog_upsample_1_finds_the_four_frontal_faces(shared_data):
    from facerestore.io import read_rgb

    img = read_rgb(shared_data / "photos" / "selfie-many-people.jpg")
    dets = detect_faces(img, "hog", upsample=1)
    matched = _match_selfie(dets)
    assert sorted(matched) == sorted(["blonde woman, left", "woman, centre left", "bearded man", "man, centre right"])


@pytest.mark.data
@pytest.mark.slow
def test_selfie_cnn_finds_real_faces(shared_data):
    from facerestore.io import read_rgb

    img = read_rgb(shared_data / "photos" / "selfie-many-people.jpg")
    dets = detect_faces(img, "cnn", upsample=0)  # upsample 1 finds the same 4 frontal faces, 4x slower
    matched = _match_selfie(dets)
    assert len(matched) >= 4 and "man with glasses, top right" in matched


def test_yunet_output_conversion_with_stub_network(monkeypatch, astronaut, astro_det):
    # cv2.FaceDetectorYN rows are [x, y, w, h, 5 x (x, y) landmarks, score] (OpenCV docs); the real network
    # needs zoo weights, so a stub returns known rows and we check the conversion
    from facerestore import zoo

    rows = np.array([[10, 20, 30, 40, *range(100, 110), 0.7],
                     [170, 70, 100, 100, *astro_det.landmarks5.ravel(), 0.95]], np.float32)

    class Stub:
        def setInputSize(self, size):
            assert size == (astronaut.shape[1], astronaut.shape[0])

        def detect(self, bgr):
            assert bgr.dtype == np.uint8 and np.array_equal(bgr[..., 0], as_uint8_rgb(astronaut)[..., 2])
            return 1, rows

    monkeypatch.setattr(zoo, "weights_path", lambda name: "/nonexistent/yunet.onnx")
    monkeypatch.setattr(cv2, "FaceDetectorYN", type("FDYN", (), {"create": staticmethod(lambda *a, **k: Stub())}))
    dets = create_detector("yunet").detect(astronaut)
    assert [d.score for d in dets] == pytest.approx([0.95, 0.7])
    assert np.allclose(dets[1].box, [10, 20, 40, 60]) and np.allclose(dets[1].landmarks5.ravel(), range(100, 110))
    assert dets[0].landmarks68 is None and dets[0].detector == "yunet"
    assert len(create_detector("yunet", min_size=35).detect(astronaut)) == 1
    with68 = create_detector("yunet", landmarks=68).detect(astronaut)[0]
    assert np.abs(with68.landmarks68 - astro_det.landmarks68).max() < 4  # predictor in the HOG-like box


# --- detector names, the "auto" default and per-detector thresholds (issue 14) --------------------------------


def test_aliases_and_per_detector_default_thresholds():
    from facerestore.faces.detect import DEFAULT_SCORE_THRESHOLDS, canonical_detector_name, default_min_score

    assert {"retinaface", "dlib-hog", "dlib-cnn", "hog", "cnn"} <= set(list_detectors())
    assert canonical_detector_name("HOG") == "dlib-hog" and canonical_detector_name("cnn") == "dlib-cnn"
    d = create_detector("dlib-hog", upsample=0)
    assert isinstance(d, DlibDetector) and d.kind == "hog" and d.threshold == DEFAULT_SCORE_THRESHOLDS["hog"]
    assert create_detector("dlib-cnn", upsample=0, threshold=0.7).threshold == 0.7
    assert default_min_score("hog") == default_min_score("dlib-hog") == DEFAULT_SCORE_THRESHOLDS["hog"]
    assert default_min_score("retinaface") == DEFAULT_SCORE_THRESHOLDS["retinaface"]
    with pytest.raises(InputError, match="unknown face detector"):
        default_min_score("scrfd-10g")


def test_auto_is_dlib_hog_with_a_note_without_retinaface_weights(monkeypatch, tmp_path, capsys):
    from facerestore.faces import detect

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    monkeypatch.setattr(detect, "_NOTED", [])
    monkeypatch.setattr(detect, "_NETS", {})  # no network loaded earlier in this process
    name, note = detect.default_detector()
    assert name == "dlib-hog" and note and "\n" not in note and "retinaface-mnet025" in note
    d = create_detector("auto", upsample=0)
    assert isinstance(d, DlibDetector) and d.kind == "hog"
    create_detector("auto", upsample=0)
    assert capsys.readouterr().err.count("retinaface-mnet025") == 1  # the note once per process
    with pytest.raises(WeightsMissingError, match="retinaface-mnet025"):
        create_detector("retinaface")


def test_auto_is_retinaface_when_its_weights_are_cached(monkeypatch):
    from facerestore import zoo
    from facerestore.faces import detect

    monkeypatch.setattr(zoo, "is_available", lambda name: name == "retinaface-mnet025")
    assert detect.default_detector() == ("retinaface", None)  # no onnx package needed: nn.onnx_proto reads it
    monkeypatch.setattr(zoo, "is_available", lambda name: False)
    name, note = detect.default_detector()
    assert name == "dlib-hog" and "facerestore models download retinaface-mnet025" in note


def test_scrfd_is_an_optional_research_only_detector_never_the_default(monkeypatch, tmp_path):
    from facerestore import zoo
    from facerestore.faces import detect

    assert "scrfd" in list_detectors()
    spec = next(s for s in detect.DETECTORS if s.name == "scrfd")
    assert spec.weights == ("scrfd-2.5g",) and "research" in spec.licence and "research-only" in spec.description
    assert detect.default_min_score("scrfd") == detect.DEFAULT_SCORE_THRESHOLDS["scrfd"]
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path))
    monkeypatch.setattr(detect, "_SCRFD_NETS", {})
    with pytest.raises(WeightsMissingError, match=r"scrfd-2\.5g") as err:
        create_detector("scrfd")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(zoo, "is_available", lambda name: name == "scrfd-2.5g")  # only SCRFD cached
    assert detect.default_detector()[0] == "dlib-hog"


def test_select_faces_refuses_a_misspelt_rule_even_without_faces():
    from facerestore.faces.detect import select_faces

    with pytest.raises(InputError, match="select must be"):
        select_faces([], "biggest", (10, 10))
    assert select_faces([], "largest", (10, 10)) == []
