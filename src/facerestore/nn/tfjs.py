"""Read TensorFlow.js models (``model.json`` manifest + binary weight shards) into plain Python and numpy.

No TF.js (or TensorFlow) at run time: ``json`` parses the manifest and ``numpy`` slices the weights out of the
shards. Two formats:

- **graph model** (``"format": "graph-model"``, tfjs-converter output of a frozen TF graph): the manifest's
  ``modelTopology.node`` list (name, op, inputs, attributes) becomes :class:`GraphNode` objects in file order;
  every ``Const`` node's value is a weight of the same name.
- **layers model** (``"format": "layers-model"``, a Keras model): the Keras ``model_config`` (a Functional
  model: layers with ``class_name``, ``config`` and inbound layers) becomes :class:`KerasLayer` objects;
  weights are named ``layer_name/kernel``, ``layer_name/bias``, ...

Weights (:func:`read_weights`): each ``weightsManifest`` group is the concatenation of its shard files, in
which the group's weights lie back to back in manifest order. dtypes float32, int32 and bool are read as
stored (little-endian); quantized weights (``"quantization": {"dtype": "uint8"|"uint16", "scale", "min"}``)
are dequantized to ``value * scale + min`` and float16 ones (``"quantization": {"dtype": "float16"}``) widened,
both to float32 as the TF.js runtime does. A manifest whose byte counts do not add up to the shard sizes, a
shard path leaving the model's folder, an unknown dtype or a shape that is not a list of non-negative integers
fails with one :class:`~facerestore.errors.InputError` line.

Shard files are looked up next to ``model.json``; ``shard_prefix`` prepends a string to each shard name (the
zoo caches ``models/x4/model.json`` and its shards flat, as ``x4-model.json`` and ``x4-group1-shard1of7.bin``).
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerestore.errors import InputError

__all__ = [
    "GraphConstants",
    "GraphNode",
    "KerasLayer",
    "TfjsModel",
    "assign_strict",
    "read_graph_model",
    "read_model",
    "read_weights",
]

# stored dtype -> numpy dtype (TF.js writes little-endian)
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("?"),
}
QUANTIZED: dict[str, np.dtype] = {
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}
MAX_WEIGHTS = 100_000
MAX_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True)
class GraphNode:
    """One node of a graph model: ``attr`` decoded to Python values (strings, ints, floats, lists)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KerasLayer:
    """One layer of a layers model: ``inputs`` are the names of the layers feeding it (first call only)."""

    class_name: str
    name: str
    config: dict[str, Any]
    inputs: tuple[str, ...]


@dataclass
class TfjsModel:
    """A TF.js model: its ``format`` ("graph-model" / "layers-model"), the parsed topology and the weights."""

    format: str
    weights: dict[str, np.ndarray]
    nodes: list[GraphNode] = field(default_factory=list)  # graph model
    layers: list[KerasLayer] = field(default_factory=list)  # layers model
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> GraphNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _fail(where: str, msg: str) -> InputError:
    return InputError(f"{where}: {msg}")


def _load_json(path: Path) -> dict[str, Any]:
    where = path.name
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise _fail(where, f"manifest of {size} bytes is larger than {MAX_MANIFEST_BYTES}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(where, f"cannot read the TF.js manifest ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(where, f"not a TF.js model.json ({exc})") from None
    except RecursionError:  # json nests one Python call per bracket
        raise _fail(where, "not a TF.js model.json (nested too deeply)") from None
    if not isinstance(data, dict) or "modelTopology" not in data or "weightsManifest" not in data:
        raise _fail(where, "not a TF.js model.json (no modelTopology / weightsManifest)")
    return data


def _shape(spec: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31
                                              for d in shape):
        raise _fail(where, f"weight {spec.get('name')!r} has a bad shape {shape!r}")
    return tuple(shape)


def _shard_path(folder: Path, name: Any, prefix: str, where: str) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise _fail(where, f"shard path {name!r} is not a plain file name next to the manifest")
    return folder / f"{prefix}{name}"


def read_weights(manifest: dict[str, Any], folder: str | os.PathLike, *, shard_prefix: str = "",
                 where: str = "model.json") -> dict[str, np.ndarray]:
    """Every weight of ``manifest["weightsManifest"]`` as a numpy array (float32 after dequantization)."""
    folder = Path(folder)
    groups = manifest.get("weightsManifest")
    if not isinstance(groups, list):
        raise _fail(where, "weightsManifest is not a list")
    out: dict[str, np.ndarray] = {}
    count = 0
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) \
                or not isinstance(group.get("weights"), list):
            raise _fail(where, "a weightsManifest group lacks its paths or weights")
        paths = [_shard_path(folder, p, shard_prefix, where) for p in group["paths"]]
        specs = []
        need = 0
        for spec in group["weights"]:
            count += 1
            if count > MAX_WEIGHTS or not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise _fail(where, "too many or malformed weight entries")
            shape = _shape(spec, where)
            q = spec.get("quantization")
            if q is not None:
                if not isinstance(q, dict) or q.get("dtype") not in QUANTIZED:
                    raise _fail(where, f"weight {spec['name']!r}: unsupported quantization {q!r}")
                stored = QUANTIZED[q["dtype"]]
            else:
                if spec.get("dtype") not in DTYPES:
                    raise _fail(where, f"weight {spec['name']!r}: unsupported dtype {spec.get('dtype')!r}")
                stored = DTYPES[spec["dtype"]]
            nbytes = math.prod(shape) * stored.itemsize
            specs.append((spec, shape, stored, need, nbytes))
            need += nbytes
        have = 0
        for p in paths:
            try:
                have += p.stat().st_size
            except OSError as exc:
                raise _fail(where, f"weight shard {p.name} is missing ({exc.strerror or exc})") from None
        if have != need:
            raise _fail(where, f"weight shards {', '.join(p.name for p in paths)} hold {have} bytes, the manifest "
                               f"describes {need}")
        buf = bytearray(have)
        pos = 0
        for p in paths:
            data = p.read_bytes()
            buf[pos:pos + len(data)] = data
            pos += len(data)
        for spec, shape, stored, offset, nbytes in specs:
            arr = np.frombuffer(buf, dtype=stored, count=nbytes // stored.itemsize, offset=offset).reshape(shape)
            q = spec.get("quantization")
            if q is not None:
                if q["dtype"] == "float16":
                    arr = arr.astype(np.float32)
                else:
                    scale, vmin = q.get("scale"), q.get("min")
                    if not isinstance(scale, (int, float)) or not isinstance(vmin, (int, float)):
                        raise _fail(where, f"weight {spec['name']!r}: quantization without scale/min")
                    arr = arr.astype(np.float32) * np.float32(scale) + np.float32(vmin)
            else:
                arr = arr.astype(arr.dtype.newbyteorder("="), copy=True)
            if spec["name"] in out:
                raise _fail(where, f"weight {spec['name']!r} appears twice")
            out[spec["name"]] = arr
    return out


def _attr_value(v: Any) -> Any:
    """A graph node attribute (TF AttrValue as JSON) as a Python value."""
    if not isinstance(v, dict) or len(v) != 1:
        return v
    ((kind, val),) = v.items()
    if kind == "s":
        return base64.b64decode(val).decode("utf-8", "replace")
    if kind == "i":
        return int(val)
    if kind == "f":
        return float(val)
    if kind == "b":
        return bool(val)
    if kind == "type":
        return str(val)
    if kind == "list":
        if not val:
            return []
        if "s" in val:
            return [base64.b64decode(s).decode("utf-8", "replace") for s in val["s"]]
        if "i" in val:
            return [int(i) for i in val["i"]]
        if "f" in val:
            return [float(f) for f in val["f"]]
        return val
    return val


def _graph_nodes(topology: dict[str, Any], where: str) -> list[GraphNode]:
    nodes = topology.get("node")
    if not isinstance(nodes, list):
        raise _fail(where, "graph model without a node list")
    out = []
    for n in nodes:
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) or not isinstance(n.get("op"), str):
            raise _fail(where, "malformed graph node")
        inputs = n.get("input") or []
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise _fail(where, f"node {n['name']!r} has malformed inputs")
        attr = {k: _attr_value(v) for k, v in (n.get("attr") or {}).items()}
        out.append(GraphNode(n["name"], n["op"], tuple(inputs), attr))
    names = [n.name for n in out]
    if len(set(names)) != len(names):
        raise _fail(where, "duplicate node names")
    return out


def _keras_layers(topology: dict[str, Any], where: str) -> tuple[list[KerasLayer], tuple[str, ...], tuple[str, ...]]:
    cfg = topology.get("model_config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        raise _fail(where, "layers model without a model_config")
    c = cfg["config"]
    layers = c.get("layers")
    if not isinstance(layers, list):
        raise _fail(where, "layers model without a layer list")
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise _fail(where, "malformed layer")
        inbound = layer.get("inbound_nodes") or []
        inputs: tuple[str, ...] = ()
        if inbound:
            first = inbound[0]
            if isinstance(first, dict):  # Keras 3 style: {"args": [...]} -- not used by these files
                raise _fail(where, f"layer {layer['name']!r}: unsupported inbound node format")
            if not isinstance(first, list) or not all(isinstance(i, list) and i and isinstance(i[0], str)
                                                      for i in first):
                raise _fail(where, f"layer {layer['name']!r}: malformed inbound nodes")
            if len(inbound) > 1:
                raise _fail(where, f"layer {layer['name']!r} is called more than once (shared layers unsupported)")
            inputs = tuple(i[0] for i in first)
        out.append(KerasLayer(str(layer.get("class_name")), layer["name"], dict(layer.get("config") or {}), inputs))

    def ends(key: str) -> tuple[str, ...]:
        v = c.get(key) or []
        if not isinstance(v, list) or not all(isinstance(i, list) and i and isinstance(i[0], str) for i in v):
            raise _fail(where, f"malformed {key}")
        return tuple(i[0] for i in v)

    return out, ends("input_layers"), ends("output_layers")


def read_model(path: str | os.PathLike, *, shard_prefix: str | None = None) -> TfjsModel:
    """Read a TF.js ``model.json`` and its weight shards.

    ``shard_prefix``: prepended to the manifest's shard file names; by default the part of the manifest's
    file name before ``model.json`` (``x4-model.json`` -> ``x4-``), empty for ``model.json`` itself.
    """
    path = Path(path)
    where = path.name
    data = _load_json(path)
    if shard_prefix is None:
        shard_prefix = path.name[: -len("model.json")] if path.name.endswith("-model.json") else ""
    fmt = data.get("format")
    topo = data["modelTopology"]
    if not isinstance(topo, dict):
        raise _fail(where, "modelTopology is not an object")
    if fmt is None:  # older converters omit it: a Keras config means a layers model
        fmt = "layers-model" if "model_config" in topo else "graph-model"
    weights = read_weights(data, path.parent, shard_prefix=shard_prefix, where=where)
    if fmt == "graph-model":
        nodes = _graph_nodes(topo, where)
        inputs = tuple(n.name for n in nodes if n.op == "Placeholder")
        consumed = {i.split(":")[0].lstrip("^") for n in nodes for i in n.inputs}
        outputs = tuple(n.name for n in nodes if n.op != "Const" and n.name not in consumed)
        missing = [n.name for n in nodes if n.op == "Const" and n.name not in weights]
        if missing:
            raise _fail(where, f"graph constants without weights: {', '.join(missing[:3])}")
        return TfjsModel(fmt, weights, nodes=nodes, input_names=inputs, output_names=outputs, manifest=data)
    if fmt == "layers-model":
        layers, inputs, outputs = _keras_layers(topo, where)
        return TfjsModel(fmt, weights, layers=layers, input_names=inputs, output_names=outputs, manifest=data)
    raise _fail(where, f"unknown TF.js model format {fmt!r}")


class GraphConstants:
    """A port's view of a graph model's constants: :meth:`take` returns one by name (InputError if absent) and
    remembers it; :meth:`check_all_used` then refuses a graph with constants the port never read (a layer it
    does not implement)."""

    def __init__(self, weights: dict[str, np.ndarray], where: str) -> None:
        self.weights, self.where, self.used = weights, where, set()

    def take(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise InputError(f"{self.where}: the graph has no constant {name}")
        self.used.add(name)
        return np.asarray(self.weights[name])

    def check_all_used(self) -> None:
        unused = sorted(set(self.weights) - self.used)
        if unused:
            raise InputError(f"{self.where}: graph constants not used by the network: {', '.join(unused[:3])}")


def read_graph_model(path: str | os.PathLike, filename: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
                     what: str) -> TfjsModel:
    """Read the graph model ``path`` (a ``.json`` file, or the folder holding ``filename``) and check that it has
    exactly the input and output names of ``what`` (e.g. "MobileFace"); one InputError line otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    m = read_model(path)
    if m.format != "graph-model" or m.input_names != inputs or m.output_names != outputs:
        raise InputError(f"{path.name}: not the {what} graph model (inputs {m.input_names}, outputs {m.output_names})")
    return m


def assign_strict(module: Any, arrays: dict[str, np.ndarray], where: str) -> None:
    """Load ``arrays`` (PyTorch state-dict names -> arrays) into ``module``: every parameter and buffer must be
    given, nothing else, each with the exact shape; one InputError line otherwise."""
    import torch

    state = module.state_dict()
    missing = sorted(set(state) - set(arrays))
    extra = sorted(set(arrays) - set(state))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3})" if len(missing) > 3 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}" + (f" (+{len(extra) - 3})" if len(extra) > 3 else ""))
        raise InputError(f"{where}: weights do not match the network: {'; '.join(parts)}")
    for k, v in arrays.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise InputError(f"{where}: {k} has shape {tuple(v.shape)}, the network expects {tuple(state[k].shape)}")
    with torch.no_grad():
        for k, v in arrays.items():
            state[k].copy_(torch.from_numpy(np.array(v, order="C")).to(state[k].dtype))
