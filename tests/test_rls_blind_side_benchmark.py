"""The RLS blind-side benchmark's bookkeeping: which faces it measures (held out from the first look) and how its
table reports the paired difference and the sides."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rls_blind_side as bench


def test_faces_are_validation_ids_outside_the_first_look(tmp_path):
    for i in range(0, 131):
        (tmp_path / f"{i:05d}.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_bytes(b"")
    faces = bench.held_out_faces(tmp_path, 5)
    assert [f.stem for f in faces] == ["00010", "00040", "00050", "00060", "00070"]
    assert all(int(f.stem) % 10 == 0 and int(f.stem) not in bench.FIRST_LOOK for f in faces)
    assert len(bench.held_out_faces(tmp_path, 100)) == 14 - 3  # ids 0..130 ending in 0, less 0, 20 and 30


def test_markdown_reports_every_row_the_interval_and_the_sides():
    def row(psnr, fed, idm, niqe, s=None):
        return {"psnr": psnr, "fed": fed, "id_mobileface": idm, "niqe": niqe,
                **({} if s is None else {"seconds_per_face": s})}

    res = {"input": row(20.0, 0.5, 0.4, 12.0), "detail": row(19.0, 0.6, 0.45, 9.0, 40.0),
           "octave below": row(18.5, 0.65, 0.47, 7.0, 41.0), "faces_differing": 2, "sides": [[64, 32], [32, 16]],
           "octave below - detail": {m: (-0.5, -0.9, -0.1) for m in bench.METRICS}}
    md = bench.to_markdown({"rows": {"x8": res}, "command": "python benchmarks/rls_blind_side.py", "faces": ["a", "b"],
                            "steps": 60, "wall_s": 120, "hardware": "cpu"})
    lines = md.splitlines()
    assert "| x8 | detail | 19.00 | 0.600 | 0.450 | 9.00 | 40.0 |" in lines
    assert "| x8 | octave below | 18.50 | 0.650 | 0.470 | 7.00 | 41.0 |" in lines
    assert "| x8 | octave below - detail (2 faces) | " + " | ".join(["-0.500 [-0.900, -0.100]"] * 4) + " | |" in lines
    assert "| x8 | sides (detail->observed) | 64->32, 32->16 | | | | |" in lines
    assert "2 held-out ffhq256 faces x x8, rls 60 steps" in md
