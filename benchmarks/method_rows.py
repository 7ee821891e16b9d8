"""The ``--methods`` syntax shared by the benchmarks that compare restorers side by side.

``NAME`` (a registered method with its default weights) or ``LABEL=NAME[:WEIGHTS][@STEPS]`` (a row labelled LABEL:
method NAME, optionally with a weights file, e.g. a training run's export against the shipped weights in the same
run, and an optimisation budget per face, the CLI's ``--steps``). Items are separated by commas.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class MethodRow(NamedTuple):
    label: str
    method: str
    weights: str | None
    steps: int | None = None


def parse_method_rows(spec: str) -> list[MethodRow]:
    """``"prior-sft,gan=prior-sft:runs/x/final.safetensors,ref10=prior-sft@10"`` -> rows; ValueError naming a
    malformed item."""
    rows = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            rows.append(MethodRow(item, item, None))
            continue
        label, _, target = item.partition("=")
        head, at, steps = target.rpartition("@")
        if not at:
            head, steps = target, ""
        method, sep, weights = head.partition(":")
        if not (label and method and (weights or not sep) and (steps.isdigit() or not at)):
            raise ValueError(f"--methods item {item!r}: use NAME or LABEL=NAME[:WEIGHTS][@STEPS]")
        rows.append(MethodRow(label, method, weights or None, int(steps) if at else None))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--methods: duplicate row labels in {labels}")
    return rows


def load_row(row: MethodRow, half: bool = False) -> Any:
    """The restorer of ``row`` (cached per process by ``facerestore.pipeline.get_restorer``), in bf16/fp16 when
    ``half`` and the method allows a reduced precision, without progress bars."""
    from facerestore.methods import registry
    from facerestore.pipeline import get_restorer

    reduced = half and len(registry.get_spec(row.method).precisions) > 1
    restorer = get_restorer(row.method, weights=row.weights, half=reduced, steps=row.steps)
    restorer.progress = False
    return restorer
