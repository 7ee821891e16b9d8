"""The ``--methods`` syntax shared by the benchmarks that compare restorers side by side.

``NAME`` (a registered method with its default weights) or ``LABEL=NAME:WEIGHTS`` (a row labelled LABEL: method
NAME with a weights file, e.g. a training run's export against the shipped weights in the same run). Items are
separated by commas.
"""

from __future__ import annotations

from typing import NamedTuple


class MethodRow(NamedTuple):
    label: str
    method: str
    weights: str | None


def parse_method_rows(spec: str) -> list[MethodRow]:
    """``"prior-sft,gan=prior-sft:runs/x/final.safetensors"`` -> rows; ValueError naming a malformed item."""
    rows = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            rows.append(MethodRow(item, item, None))
            continue
        label, _, target = item.partition("=")
        method, sep, weights = target.partition(":")
        if not (label and method and sep and weights):
            raise ValueError(f"--methods item {item!r}: use NAME or LABEL=NAME:WEIGHTS")
        rows.append(MethodRow(label, method, weights))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--methods: duplicate row labels in {labels}")
    return rows
