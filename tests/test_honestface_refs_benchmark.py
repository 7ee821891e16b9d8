"""The reference benchmark's bookkeeping (issue 17's acceptance table): which rows and paired differences a run
measures, which persons it takes, the per-face partial file that lets a long CPU run resume, and the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import honestface_refs as bench


def test_prior_methods_get_none_one_all_wrong_rows_and_the_more_references_pair():
    rows, pairs = bench.rows_and_pairs(["robust-inversion", "rls"])
    assert rows == ["input", *(f"{m} {r}" for m in ("robust-inversion", "rls") for r in ("none", "one", "all",
                                                                                          "wrong"))]
    for m in ("robust-inversion", "rls"):
        assert (f"{m} one", f"{m} none") in pairs  # does one photo help
        assert (f"{m} all", f"{m} one") in pairs  # do more photos help more
        assert (f"{m} wrong", f"{m} none") in pairs  # the control
    assert all(a in rows and b in rows for a, b in pairs)


def test_honestface_rows_keep_their_names_and_compare_with_the_prior_methods():
    rows, pairs = bench.rows_and_pairs(["honestface", "prior-sft"], unrefined=("prior-sft",))
    assert rows[:5] == ["input", "none", "one", "all", "wrong"]
    assert "prior-sft 0 steps" in rows and ("prior-sft all", "all") in pairs
    assert len(pairs) == len(set(pairs))


def test_select_persons_takes_a_window_of_the_list():
    assert bench.select_persons(10, 0, 0) == list(range(10))
    assert bench.select_persons(10, 4, 4) == [4, 5, 6, 7]
    assert bench.select_persons(10, 8, 5) == [8, 9]  # clipped at the end of the list
    with pytest.raises(SystemExit, match="--start-person"):
        bench.select_persons(10, 10, 1)


def _record(person: int, kind: str, offset: float) -> dict:
    rows = ("input", "rls none", "rls one", "rls all", "rls wrong")
    return {"person": person, "degradation": kind,
            "scores": {row: {name: offset + i for name in bench.METRICS} for i, row in enumerate(rows)},
            "refused": {"rls one": False, "rls all": person % 2 == 0, "rls wrong": True}}


def test_partial_results_round_trip_and_survive_a_torn_last_line(tmp_path: Path):
    path, key = tmp_path / "out.partial.jsonl", {"methods": ["rls"], "steps": 60, "rows": ["input", "rls none"]}
    recs = [_record(4, "blind", 0.0), _record(4, "x8", 0.5)]
    for rc in recs:
        bench.append_partial(path, key, rc)
    with path.open("a") as fh:  # a run killed while writing
        fh.write('{"run": {"methods": ["rls"], "ste')
    assert bench.load_partial(path, key) == recs
    assert bench.load_partial(tmp_path / "absent.jsonl", key) == []


def test_partial_results_of_a_run_with_other_options_are_refused(tmp_path: Path):
    path = tmp_path / "out.partial.jsonl"
    bench.append_partial(path, {"methods": ["rls"], "steps": 60}, _record(4, "blind", 0.0))
    with pytest.raises(SystemExit, match="other options"):
        bench.load_partial(path, {"methods": ["rls"], "steps": 30})


def test_summary_means_intervals_and_refusal_rates():
    recs = [_record(p, k, 0.1 * p) for p in (4, 5, 6) for k in ("blind", "x8")]
    rows, pairs = bench.rows_and_pairs(["rls"])
    s = bench.summarize(recs, rows, pairs)
    offsets = np.array([0.1 * p for p in (4, 5, 6) for _ in (0, 1)])
    assert s["rows"]["rls one"]["fed"] == pytest.approx(offsets.mean() + 2)
    # every face has "rls all" exactly one above "rls one": the interval is a point at +1
    interval = s["pairs"]["rls all - rls one"][bench.ID]
    assert interval == pytest.approx([1.0, 1.0, 1.0])
    assert s[f"{bench.ID} x8"]["rls none - input"] == pytest.approx([1.0, 1.0, 1.0])
    assert s["refusal_rate"] == {"rls one": 0.0, "rls all": pytest.approx(4 / 6), "rls wrong": 1.0}
    json.dumps(s)  # the summary is written as JSON


def test_markdown_names_the_methods_and_the_held_out_persons():
    recs = [_record(p, k, 0.0) for p in (4, 5) for k in ("blind", "x8")]
    rows, pairs = bench.rows_and_pairs(["rls"])
    res = {"methods": ["rls"], "faces": 4, "persons": 2, "person_indices": [4, 5], "resumed_faces": 2, "size": 256,
           "weights": None, "summary": bench.summarize(recs, rows, pairs), "command": "python x.py"}
    md = bench.to_markdown(res).split("\n")
    assert md[0] == "# Reference photos for rls (4 faces: 2 persons x blind/x8, 256 px)"
    assert any(line.startswith("Persons 4-5 of the list") and "2 face(s) measured by an interrupted" in line
               for line in md)
    assert "| rls all - rls one | " + " | ".join(["1 [1, 1]"] * len(bench.METRICS)) + " |" in md
