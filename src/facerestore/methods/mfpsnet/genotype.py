"""Genotypes: a searched module's network path and cell, their JSON form, and the released presets.

A module genotype (one searched module: the upsampling module of FRSNet, a prior search module or the fusion
module of MFPSNet) is

- ``path``: the level of each layer's cell (0 = output resolution, 128 px; level k has side ``128 / 2**k``).
  The upsampling module starts at level 3 (the 16 px backbone features, rate 1) and must move at most one
  level per layer; the prior and fusion modules start at level 0 (rate 1);
- ``cell``: ``(edge, op)`` pairs of the cell shared by every layer. Edges are numbered step by step: step
  ``i`` (0-based) takes the ``i + 2`` states ``[H_{l-2}, H_{l-1}, h_1 .. h_i]`` as inputs, so with 3 steps
  step 0 owns edges 0-1, step 1 edges 2-4 and step 2 edges 5-8 (9 edges). ``op`` indexes
  :data:`~facerestore.methods.mfpsnet.ops.PRIMITIVES` (0 skip, 1 conv3, 2 conv5, 3 conv7).

A network genotype holds the upsampling module (``sr``) and, for MFPSNet, the three prior modules and the
fusion module. ``save_genotype`` / ``load_genotype`` write and read it as JSON (``{"format":
"facerestore-mfpsnet-genotype", "version": 1, "modules": {"sr": {"path": [...], "cell": [[e, o], ...]}, ...}}``).

:data:`PRESETS`: "released" (the authors' searched genotypes, from ../shared/spec/methods.md: the SR path
[2,1,1,1,0,1], parse [1,2,1,0,1,0], heat [0,0,0,1,0,1], dict [0,0,1,2,1,0] and a 6-layer fusion path
[0,1,2,1,1,2], although the paper sets L_F = 8), and "keep-upsampling" (a hand-designed reference: the
upsampling module climbs straight to 128 px and stays there, every cell op a 3x3 ConvBR; the prior/fusion
modules stay at full resolution), the "w/o-uss"-style row of an ablation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore.errors import InputError
from facerestore.methods.mfpsnet.ops import NUM_LEVELS, PRIMITIVES

__all__ = [
    "FORMAT",
    "MODULES",
    "PRESETS",
    "PRIOR_MODULES",
    "START_LEVEL",
    "Genotype",
    "ModuleGenotype",
    "edge_range",
    "get_preset",
    "load_genotype",
    "num_edges",
    "save_genotype",
]

FORMAT = "facerestore-mfpsnet-genotype"
PRIOR_MODULES: tuple[str, ...] = ("parse", "heat", "dict")
MODULES: tuple[str, ...] = ("sr", *PRIOR_MODULES, "fusion")
START_LEVEL = {"sr": NUM_LEVELS - 1, "parse": 0, "heat": 0, "dict": 0, "fusion": 0}
MAX_LAYERS = 32


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` blocks: 2 + 3 + ... + (steps + 1)."""
    return steps * (steps + 3) // 2


def edge_range(step: int) -> range:
    """Edge indices owned by block ``step`` (0-based): its ``step + 2`` inputs."""
    start = step * (step + 3) // 2
    return range(start, start + step + 2)


@dataclass(frozen=True)
class ModuleGenotype:
    """``path`` (level per layer) and ``cell`` ((edge, op) pairs, sorted by edge) of one searched module."""

    path: tuple[int, ...]
    cell: tuple[tuple[int, int], ...]
    steps: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(int(p) for p in self.path))
        object.__setattr__(self, "cell", tuple(sorted((int(e), int(o)) for e, o in self.cell)))

    def validate(self, start_level: int, where: str = "genotype") -> ModuleGenotype:
        """InputError (one line) unless the path moves by at most one level per layer from ``start_level``
        within levels 0..3 and every block of the cell has at least one edge, all edges and ops in range."""
        if not 1 <= len(self.path) <= MAX_LAYERS:
            raise InputError(f"{where}: path must have 1..{MAX_LAYERS} layers, got {len(self.path)}")
        prev = start_level
        for i, p in enumerate(self.path):
            if not 0 <= p < NUM_LEVELS:
                raise InputError(f"{where}: path level {p} at layer {i} is outside 0..{NUM_LEVELS - 1}")
            if abs(p - prev) > 1:
                raise InputError(f"{where}: path jumps from level {prev} to {p} at layer {i} (at most one level)")
            prev = p
        if not 1 <= self.steps <= 8:
            raise InputError(f"{where}: steps must be in 1..8, got {self.steps}")
        seen: set[int] = set()
        for e, o in self.cell:
            if not 0 <= e < num_edges(self.steps):
                raise InputError(f"{where}: edge {e} is outside 0..{num_edges(self.steps) - 1}")
            if not 0 <= o < len(PRIMITIVES):
                raise InputError(f"{where}: op {o} is outside 0..{len(PRIMITIVES) - 1} ({', '.join(PRIMITIVES)})")
            if e in seen:
                raise InputError(f"{where}: edge {e} appears twice")
            seen.add(e)
        for s in range(self.steps):
            if not seen & set(edge_range(s)):
                raise InputError(f"{where}: block {s} has no input edge (edges {list(edge_range(s))})")
        return self

    def ops_of_step(self, step: int) -> list[tuple[int, int]]:
        """The (edge, op) pairs feeding block ``step``."""
        r = edge_range(step)
        return [(e, o) for e, o in self.cell if e in r]

    def to_dict(self) -> dict[str, Any]:
        return {"path": list(self.path), "cell": [[e, o] for e, o in self.cell], "steps": self.steps}

    @classmethod
    def from_dict(cls, d: Any, where: str = "genotype") -> ModuleGenotype:
        if not isinstance(d, dict) or "path" not in d or "cell" not in d:
            raise InputError(f"{where}: a module needs 'path' and 'cell'")
        try:
            cell = [(int(e), int(o)) for e, o in d["cell"]]
            return cls(tuple(int(p) for p in d["path"]), tuple(cell), int(d.get("steps", 3)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed path/cell ({exc})") from None


@dataclass(frozen=True)
class Genotype:
    """The searched modules of a network: ``modules["sr"]`` always, the prior and fusion modules for MFPSNet."""

    modules: dict[str, ModuleGenotype] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.modules) - set(MODULES)
        if unknown:
            raise InputError(f"genotype: unknown modules {sorted(unknown)}; known: {', '.join(MODULES)}")
        if "sr" not in self.modules:
            raise InputError("genotype: the upsampling module 'sr' is missing")
        for name, m in self.modules.items():
            m.validate(START_LEVEL[name], f"genotype module {name!r}")

    @property
    def has_priors(self) -> bool:
        """True when every prior module and the fusion module are present (an MFPSNet genotype)."""
        return all(n in self.modules for n in (*PRIOR_MODULES, "fusion"))

    def __getitem__(self, name: str) -> ModuleGenotype:
        return self.modules[name]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1,
                "modules": {n: self.modules[n].to_dict() for n in MODULES if n in self.modules}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "genotype") -> Genotype:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{where}: not a {FORMAT} file")
        if d.get("version") != 1:
            raise InputError(f"{where}: unsupported version {d.get('version')!r}")
        mods = d.get("modules")
        if not isinstance(mods, dict):
            raise InputError(f"{where}: 'modules' must be a mapping")
        return cls({str(n): ModuleGenotype.from_dict(m, f"{where} module {n!r}") for n, m in mods.items()})


def save_genotype(genotype: Genotype, path: str | os.PathLike, search: Mapping[str, Any] | None = None) -> Path:
    """Write ``genotype`` as JSON, atomically; ``search`` (a search's own record: finished, step, total_steps,
    architecture_steps, train_hours) is stored beside the modules under ``"search"`` so that a reader can tell a
    finished search's genotype from a stopped one's (:func:`genotype_search_record`)."""
    from facerestore.io import atomic_write_text

    data = genotype.to_dict()
    if search is not None:
        data["search"] = dict(search)
    return atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")


def genotype_search_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``"search"`` record of a genotype file written by a search (None for a file without one: a hand-made
    genotype or one written before searches recorded themselves)."""
    load_genotype(path)  # a valid genotype file first (one-line InputError otherwise)
    record = json.loads(Path(path).read_text(encoding="utf-8")).get("search")
    return dict(record) if isinstance(record, dict) else None


def load_genotype(ref: str | os.PathLike | Mapping[str, Any]) -> Genotype:
    """A genotype from a JSON file, a preset name (:data:`PRESETS`) or a mapping (a config's inline genotype)."""
    if isinstance(ref, Mapping):
        return Genotype.from_dict(dict(ref), "inline genotype")
    if isinstance(ref, str) and ref in PRESETS:
        return PRESETS[ref]
    p = Path(ref)
    if not p.is_file():
        raise InputError(f"genotype {str(ref)!r} is neither a file nor a preset ({', '.join(PRESETS)})")
    if p.stat().st_size > 1 << 20:
        raise InputError(f"genotype file {p.name} is larger than 1 MiB")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"genotype file {p.name} is not valid JSON ({exc})") from None
    return Genotype.from_dict(data, p.name)


def _m(path: list[int], cell: list[list[int]]) -> ModuleGenotype:
    return ModuleGenotype(tuple(path), tuple((e, o) for e, o in cell))


_CONV3_CELL = [[0, 1], [1, 1], [2, 1], [3, 1], [5, 1], [6, 1]]

PRESETS: dict[str, Genotype] = {
    # the authors' searched genotypes (YYJ1anG/MFPSNet, retrain/MFPSNet.py; facts in ../shared/spec/methods.md)
    "released": Genotype({
        "sr": _m([2, 1, 1, 1, 0, 1], [[0, 0], [1, 0], [2, 2], [3, 0], [7, 1], [8, 3]]),
        "parse": _m([1, 2, 1, 0, 1, 0], [[0, 1], [1, 1], [3, 1], [4, 3], [5, 3], [7, 0]]),
        "heat": _m([0, 0, 0, 1, 0, 1], [[0, 3], [1, 1], [2, 2], [3, 2], [5, 1], [7, 2]]),
        "dict": _m([0, 0, 1, 2, 1, 0], [[0, 0], [1, 1], [2, 3], [4, 0], [6, 1], [7, 0]]),
        "fusion": _m([0, 1, 2, 1, 1, 2], [[0, 0], [1, 0], [2, 2], [4, 2], [7, 2], [8, 3]]),
    }),
    # hand-designed reference: straight upsampling, 3x3 convolutions everywhere, no multi-scale path
    "keep-upsampling": Genotype({
        "sr": _m([2, 1, 0, 0, 0, 0], _CONV3_CELL),
        **{n: _m([0] * 6, _CONV3_CELL) for n in PRIOR_MODULES},
        "fusion": _m([0] * 8, _CONV3_CELL),
    }),
}


def get_preset(name: str) -> Genotype:
    """A named genotype (InputError listing the presets otherwise)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown genotype preset {name!r}; presets: {', '.join(PRESETS)}") from None
