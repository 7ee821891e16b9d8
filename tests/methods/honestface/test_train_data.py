"""HonestFace training data: synthetic persons (a `facerestore synth --views` folder) join the photo persons, each
person's references are its own other photos, and a batch is a function of (step, seed) only."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="the [diffusion] extra (diffusers, peft) is not installed")
pytest.importorskip("peft", reason="the [diffusion] extra (diffusers, peft) is not installed")

from conftest import deliver_signal
from facerestore.methods.honestface import train as hf_train

BUILTIN = "builtin:stylegan2-face-64.safetensors"


class QueueEmbedder:
    """Hands out prepared embeddings, one (1 + views, 128) block per person, in call order."""

    def __init__(self, distances: list[list[float]]) -> None:
        self.blocks = [torch.tensor([[d] + [0.0] * 127 for d in person]) for person in distances]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks.pop(0)
        assert len(block) == len(x)
        return block


def test_synth_persons_keep_views_within_the_distance_and_drop_lonely_samples(tmp_path):
    from facerestore.train.synth import write_synth

    write_synth(tmp_path / "s", 3, size=64, seed=0, weights=BUILTIN, views=2)
    # person 0: both views kept; person 1: one view over 0.5 left out; person 2: no view left -> not a person
    emb = QueueEmbedder([[0.0, 0.3, 0.45], [0.0, 0.7, 0.2], [0.0, 0.9, 0.6]])
    faces, person, embs, dropped = hf_train.synth_persons(tmp_path / "s", emb)
    assert faces.shape == (5, 3, hf_train.SIZE, hf_train.SIZE) and dropped == 3
    assert person.tolist() == [hf_train.SYNTH_PERSON0] * 3 + [hf_train.SYNTH_PERSON0 + 1] * 2
    assert embs[:, 0].tolist() == pytest.approx([0.0, 0.3, 0.45, 0.0, 0.2])
    assert float(faces.min()) >= 0 and float(faces.max()) <= 1
    write_synth(tmp_path / "plain", 1, size=64, seed=0, weights=BUILTIN)
    with pytest.raises(ValueError, match="no views"):
        hf_train.synth_persons(tmp_path / "plain", QueueEmbedder([]))


def _data() -> dict:
    """Faces of constant grey level 10 * index (so that a batch's HQ face tells its index): 4 photo faces of 2
    persons, 6 ffhq faces (self references), 3 synthetic persons of 2 faces each."""
    person = [0, 0, 1, 1] + [-1 - i for i in range(6)] + [hf_train.SYNTH_PERSON0 + k // 2 for k in range(6)]
    n = len(person)
    faces = torch.stack([torch.full((3, hf_train.SIZE, hf_train.SIZE), 10 * j, dtype=torch.uint8) for j in range(n)])
    return {"faces": faces, "person": torch.tensor(person), "landmarks": torch.zeros(n, 68, 2),
            "embeddings": torch.arange(n, dtype=torch.float32)[:, None].expand(n, 128).clone()}


def test_batches_draw_each_source_and_take_references_from_the_same_person():
    data = _data()
    person = data["person"]
    for step in range(6):
        batch = hf_train.make_batch(data, step, 4, seed=1)
        idx = [round(float(h.mean()) * 255 / 10) for h in batch["hq"]]
        assert 0 <= int(person[idx[0]]) < hf_train.SYNTH_PERSON0  # slot 0: a photo person
        assert int(person[idx[2]]) >= hf_train.SYNTH_PERSON0  # slot 2: a synthetic person
        for b in (0, 2):
            for r, used in zip(batch["ref_emb"][b], batch["mask"][b]):
                if used:  # references are the person's other photos (embedding = face index here)
                    j = int(r[0])
                    assert person[j] == person[idx[b]] and j != idx[b]
    again = hf_train.make_batch(data, 3, 4, seed=1)
    first = hf_train.make_batch(data, 3, 4, seed=1)
    for key in first:
        assert torch.equal(first[key], again[key])


def test_without_synthetic_persons_slot_two_stays_a_photo_person():
    data = _data()
    keep = data["person"] < hf_train.SYNTH_PERSON0
    data = {k: v[keep] for k, v in data.items()}
    for step in range(4):
        batch = hf_train.make_batch(data, step, 4, seed=2)
        idx = [round(float(h.mean()) * 255 / 10) for h in batch["hq"]]
        assert all(0 <= int(data["person"][idx[b]]) for b in (0, 2))


def _tiny_run(out, astronaut):
    """A run folder with a prepared data.pt of 6 faces of two 'persons' (the astronaut with noise)."""
    import cv2

    from facerestore.methods.honestface.model import face_landmarks68
    from facerestore.train.checkpoint import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    face = cv2.resize(astronaut[20:276, 110:366], (hf_train.SIZE, hf_train.SIZE))
    x = torch.from_numpy(face.transpose(2, 0, 1)).float()[None].repeat(6, 1, 1, 1)
    x = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    save_checkpoint(out / "data.pt", {
        "faces": (x * 255).round().to(torch.uint8), "person": torch.tensor([0, 0, 0, 1, 1, 1]),
        "landmarks": torch.from_numpy(face_landmarks68(x)).float(),
        "embeddings": torch.randn(6, 128, generator=torch.Generator().manual_seed(1)), "synth": ""})
    return ["--out", str(out), "--minutes", "0.5", "--batch", "2", "--phase-v", "2", "--phase-a", "2"]


def test_a_diverged_chunk_stops_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path, astronaut, monkeypatch,
                                                                              capsys):
    args = _tiny_run(tmp_path / "hf", astronaut)
    assert hf_train._cli(args) == 0  # phase V: 2 steps, saved
    state = tmp_path / "hf" / "state.pt"
    before = state.read_bytes()
    real = hf_train.make_batch

    def nan_batch(*a, **kw):
        b = real(*a, **kw)
        b["hq"] = b["hq"] * float("nan")
        return b

    monkeypatch.setattr(hf_train, "make_batch", nan_batch)
    capsys.readouterr()
    assert hf_train._cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "non-finite loss at step 2 (phase A)" in err[-1]
    assert state.read_bytes() == before


def test_a_signal_saves_the_chunk_then_stops(tmp_path, astronaut, monkeypatch):
    import signal

    args = _tiny_run(tmp_path / "hf", astronaut)
    real = hf_train.make_batch

    def signalled_batch(data, step, *a, **kw):
        if step == 0:
            deliver_signal(signal.SIGTERM)  # in the middle of the first step
        return real(data, step, *a, **kw)

    monkeypatch.setattr(hf_train, "make_batch", signalled_batch)
    assert hf_train._cli(args) == 128 + signal.SIGTERM
    from facerestore.train.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "hf" / "state.pt")["step"] == 1  # that step finished, saved, no other
    assert (tmp_path / "hf" / "final.safetensors").is_file()


def test_training_options_are_checked_before_anything_loads(tmp_path, capsys):
    for bad, msg in ((["--batch", "0"], "--batch must be at least 1"), (["--lr", "0"], "--lr must be in (0, 1]"),
                     (["--minutes", "-1"], "--minutes must be a positive number"),
                     (["--export", str(tmp_path / "w.json")], "--export writes .safetensors")):
        assert hf_train._cli(["--out", str(tmp_path / "o"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "o").exists()


def test_phase_b_in_chunks_trains_what_one_chunk_would(tmp_path, astronaut, monkeypatch):
    """Phase B's timesteps and diffusion noise are drawn per step (they were seeded once per chunk: a run split by
    a stop and a rerun trained other weights than the same steps in one go)."""
    import signal

    from facerestore.train.checkpoint import load_checkpoint

    real = hf_train.make_batch
    stop_at: set[int] = set()

    def batch_then_maybe_stop(data, step, *a, **kw):
        if step in stop_at:
            deliver_signal(signal.SIGTERM)  # this step finishes, the chunk saves and stops
        return real(data, step, *a, **kw)

    monkeypatch.setattr(hf_train, "make_batch", batch_then_maybe_stop)
    states = []
    for chunks in ([2], [0, 2]):  # steps 0-2 in one chunk; step 0, then steps 1-2
        args = _tiny_run(tmp_path / f"hf{len(chunks)}", astronaut)
        args[args.index("--phase-v") + 1] = args[args.index("--phase-a") + 1] = "0"  # phase B from step 0
        for last in chunks:
            stop_at.clear()
            stop_at.add(last)
            assert hf_train._cli(args) == 128 + signal.SIGTERM
        state = load_checkpoint(tmp_path / f"hf{len(chunks)}" / "state.pt")
        assert state["step"] == 3
        states.append(state["net"])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
