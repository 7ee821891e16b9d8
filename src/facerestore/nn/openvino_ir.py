"""Read an OpenVINO IR v10 model (``.xml`` graph + ``.bin`` weights) into plain Python and numpy.

No OpenVINO at run time: ``xml.etree`` parses the graph and ``numpy`` slices the constants out of the
``.bin`` file. The result is an :class:`IRGraph`: every layer (id, name, type, opset version, its ``<data>``
attributes, input and output ports with their static shapes), the edges between ports, and the array of
every ``Const`` layer. Const layers exported from PyTorch keep the original parameter names
(``m.layers.0.conv1.conv.weight_dw``); unnamed ones (``Constant_745``) are reached through the graph with
:meth:`IRGraph.source` / :meth:`IRGraph.consumers`.

Malformed files fail with one ``InputError`` line: unknown element types, a constant whose byte range
falls outside the ``.bin`` file or whose size does not match its shape, edges to missing ports.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from facerestore.errors import InputError

__all__ = ["ELEMENT_TYPES", "IRGraph", "IRLayer", "IRPort", "read_ir"]

# OpenVINO element type -> numpy dtype (little-endian, as stored in the .bin file).
ELEMENT_TYPES: dict[str, np.dtype] = {
    "f64": np.dtype("<f8"),
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "i64": np.dtype("<i8"),
    "i32": np.dtype("<i4"),
    "i16": np.dtype("<i2"),
    "i8": np.dtype("i1"),
    "u64": np.dtype("<u8"),
    "u32": np.dtype("<u4"),
    "u16": np.dtype("<u2"),
    "u8": np.dtype("u1"),
    "boolean": np.dtype("?"),
}


@dataclass(frozen=True)
class IRPort:
    """One input or output port of a layer: its id, static dims (empty for scalars), precision and tensor names."""

    id: int
    dims: tuple[int, ...]
    precision: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class IRLayer:
    """One node of the graph; ``data`` holds the attributes of its ``<data>`` element as strings."""

    id: int
    name: str
    type: str
    version: str
    data: dict[str, str]
    inputs: tuple[IRPort, ...]
    outputs: tuple[IRPort, ...]

    def attr_ints(self, key: str) -> tuple[int, ...]:
        """A comma-separated integer attribute of ``data`` ('1, 1' -> (1, 1); '' -> ())."""
        text = self.data.get(key, "").strip()
        return tuple(int(v) for v in text.split(",")) if text else ()


@dataclass
class IRGraph:
    """The parsed model: layers by id, edges, and the numpy array of each Const layer (by layer id)."""

    name: str
    version: int
    layers: dict[int, IRLayer]
    edges: list[tuple[int, int, int, int]]  # (from layer, from port, to layer, to port)
    constants: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._source = {(e[2], e[3]): (e[0], e[1]) for e in self.edges}

    def source(self, layer_id: int, port: int | None = None) -> tuple[int, int]:
        """(layer id, output port) feeding input ``port`` of ``layer_id`` (default: its first input)."""
        if port is None:
            port = self.layers[layer_id].inputs[0].id
        try:
            return self._source[(layer_id, port)]
        except KeyError:
            raise InputError(f"IR layer {layer_id} input port {port} has no incoming edge") from None

    def input_layers(self, layer_id: int) -> list[IRLayer]:
        """The producers of every input of ``layer_id``, in input-port order."""
        return [self.layers[self.source(layer_id, p.id)[0]] for p in self.layers[layer_id].inputs]

    def consumers(self, layer_id: int) -> list[IRLayer]:
        """Layers that read any output of ``layer_id`` (in edge order)."""
        return [self.layers[e[2]] for e in self.edges if e[0] == layer_id]

    def of_type(self, layer_type: str) -> list[IRLayer]:
        """Layers of one type, in topological order."""
        return [self.layers[i] for i in self.topological_order() if self.layers[i].type == layer_type]

    def named_constants(self) -> dict[str, np.ndarray]:
        """Arrays of the Const layers by layer name (the exporter's parameter names where it kept them)."""
        return {self.layers[i].name: a for i, a in self.constants.items()}

    def topological_order(self) -> list[int]:
        """Layer ids such that every layer comes after its producers (Kahn's algorithm, stable by id)."""
        pending = {i: len(layer.inputs) for i, layer in self.layers.items()}
        readers: dict[int, list[int]] = {i: [] for i in self.layers}
        for e in self.edges:
            readers[e[0]].append(e[2])
        ready = sorted(i for i, n in pending.items() if n == 0)
        order: list[int] = []
        while ready:
            i = ready.pop(0)
            order.append(i)
            for j in readers[i]:
                pending[j] -= 1
                if pending[j] == 0:
                    ready.append(j)
        if len(order) != len(self.layers):
            raise InputError(f"IR graph {self.name!r} has a cycle or dangling inputs")
        return order


def _ports(parent: ET.Element | None) -> tuple[IRPort, ...]:
    if parent is None:
        return ()
    ports = []
    for p in parent.findall("port"):
        dims = tuple(int(d.text or "0") for d in p.findall("dim"))
        names = tuple(n.strip() for n in p.get("names", "").split(",") if n.strip())
        ports.append(IRPort(int(p.get("id", "0")), dims, p.get("precision", ""), names))
    return tuple(ports)


def _const_array(layer: IRLayer, blob: bytes, where: str) -> np.ndarray:
    etype = layer.data.get("element_type", "")
    if etype not in ELEMENT_TYPES:
        raise InputError(f"{where}: Const {layer.name!r} has unsupported element type {etype!r}")
    dtype = ELEMENT_TYPES[etype]
    shape = layer.attr_ints("shape")
    try:
        offset, size = int(layer.data["offset"]), int(layer.data["size"])
    except (KeyError, ValueError):
        raise InputError(f"{where}: Const {layer.name!r} has no valid offset/size") from None
    if size != math.prod(shape) * dtype.itemsize:
        raise InputError(f"{where}: Const {layer.name!r} size {size} does not match shape {shape} of {etype}")
    if offset < 0 or offset + size > len(blob):
        raise InputError(f"{where}: Const {layer.name!r} bytes [{offset}, {offset + size}) lie outside the "
                         f".bin file ({len(blob)} bytes)")
    # a read-only view of the .bin bytes, not a copy: many Const layers may name the same bytes, and copies would
    # multiply the file's size by their number
    return np.frombuffer(blob, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


def read_ir(xml_path: str | os.PathLike, bin_path: str | os.PathLike | None = None) -> IRGraph:
    """Parse ``xml_path`` (IR v10 / v11) and load its constants from ``bin_path`` (default: same stem, .bin)."""
    xml_path = os.fspath(xml_path)
    bin_path = os.fspath(bin_path) if bin_path is not None else os.path.splitext(xml_path)[0] + ".bin"
    where = os.path.basename(xml_path)
    for p in (xml_path, bin_path):
        if not os.path.isfile(p):
            raise InputError(f"OpenVINO IR file not found: {p}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise InputError(f"{where} is not valid XML: {e}") from None
    if root.tag != "net" or root.get("version") not in ("10", "11"):
        raise InputError(f"{where} is not an OpenVINO IR v10/v11 model (root <{root.tag} "
                         f"version={root.get('version')!r}>)")
    try:
        return _read_graph(root, bin_path, where)
    except (ValueError, TypeError) as exc:  # an id, dimension or attribute that is not a number
        raise InputError(f"{where}: malformed IR ({exc})") from None


def _read_graph(root: ET.Element, bin_path: str, where: str) -> IRGraph:
    layers: dict[int, IRLayer] = {}
    for el in root.iterfind("layers/layer"):
        data = el.find("data")
        layer = IRLayer(
            id=int(el.get("id", "-1")),
            name=el.get("name", ""),
            type=el.get("type", ""),
            version=el.get("version", ""),
            data=dict(data.attrib) if data is not None else {},
            inputs=_ports(el.find("input")),
            outputs=_ports(el.find("output")),
        )
        if layer.id in layers:
            raise InputError(f"{where}: duplicate layer id {layer.id}")
        layers[layer.id] = layer
    edges = []
    for e in root.iterfind("edges/edge"):
        edge = tuple(int(e.get(k, "-1")) for k in ("from-layer", "from-port", "to-layer", "to-port"))
        src, dst = layers.get(edge[0]), layers.get(edge[2])
        if src is None or dst is None or edge[1] not in {p.id for p in src.outputs} \
                or edge[3] not in {p.id for p in dst.inputs}:
            raise InputError(f"{where}: edge {edge} connects ports that do not exist")
        edges.append(edge)
    with open(bin_path, "rb") as f:
        blob = f.read()
    constants = {i: _const_array(layer, blob, where) for i, layer in layers.items() if layer.type == "Const"}
    return IRGraph(root.get("name", ""), int(root.get("version", "0")), layers, edges, constants)  # type: ignore[arg-type]
