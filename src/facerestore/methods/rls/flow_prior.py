"""Training, storing and finding the MAF W-prior of RLS (paper 004).

The authors did not release their flow: ``train_generator_flow`` fits ``nn.flow.MAF`` (5 blocks, hidden
1024, per-dimension standardisation) by maximum likelihood on fresh mapping-network samples of the
generator. ``save_generator_flow`` writes ``<generator stem>.rls-flow.safetensors`` (weights + config)
and ``<generator stem>.rls-flow.json`` (training record) next to the generator file, where
``find_flow`` looks for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facerestore.errors import WeightsMissingError
from facerestore.io import atomic_write_json
from facerestore.nn.flow import MAF, load_flow, save_flow, train_flow
from facerestore.nn.stylegan2 import Generator
from facerestore.nn.stylegan2_io import check_generator_record, find_sidecar, generator_sha256, sidecar_paths

__all__ = ["check_flow_generator", "find_flow", "flow_paths", "load_generator_flow", "save_generator_flow",
           "train_generator_flow"]

SUFFIX = ".rls-flow"


def flow_paths(generator_path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, record) paths of the flow stored next to ``generator_path``."""
    return sidecar_paths(generator_path, SUFFIX)


def train_generator_flow(
    G: Generator,
    *,
    steps: int = 20000,
    batch: int = 512,
    lr: float = 1e-4,
    seed: int = 0,
    num_blocks: int = 5,
    hidden: int = 1024,
    n_stats: int = 100_000,
    n_calibrate: int = 100_000,
    callback: Callable[[int, float], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    save_every: int = 1000,
    generator_hash: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MAF:
    """Fit a MAF to W samples of ``G`` (z ~ N(0, I) through the mapping network), all draws seeded by ``seed``.

    Returns the flow in eval mode with calibrated batch-norm statistics. ``checkpoint`` / ``save_every`` /
    ``should_stop``: resumable training as :func:`facerestore.nn.flow.train_flow` (the checkpoint also refuses
    another seed or, when ``generator_hash`` is given, another generator).
    """
    gen = torch.Generator().manual_seed(int(seed))
    return train_flow(
        lambda n, g: G.sample_w(n, g), steps, batch, lr, gen, num_blocks=num_blocks, hidden=hidden,
        n_stats=n_stats, n_calibrate=n_calibrate, callback=callback, checkpoint=checkpoint, save_every=save_every,
        settings={"seed": int(seed), "generator_sha256": generator_hash}, should_stop=should_stop,
    )


def save_generator_flow(
    flow: MAF, generator_path: str | os.PathLike, out: str | os.PathLike | None = None, *, half: bool = False,
    **record: Any,
) -> Path:
    """Store ``flow`` (default next to the generator) with a JSON record; returns the weights path.

    ``record`` adds training facts (steps, seed, final nll...). The record names the generator file and its
    sha256 so a flow is not silently used with another generator.
    """
    weights, rec_path = flow_paths(generator_path) if out is None else (Path(out), Path(out).with_suffix(".json"))
    save_flow(flow, weights, half=half)  # atomic
    gp = Path(generator_path)
    info = {
        "format": "facerestore-rls-flow",
        "generator": gp.name,
        "generator_sha256": generator_sha256(gp) if gp.exists() else None,
        "config": flow.config,
        "dtype": "float16" if half else "float32",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **record,
    }
    atomic_write_json(rec_path, info)
    return weights


def find_flow(generator_path: str | os.PathLike) -> Path:
    """The flow of the generator at ``generator_path``: stored next to it, else shipped with the package
    (``zoo/builtin/<name>.rls-flow.safetensors``, e.g. for the zoo's MobileStyleGAN); WeightsMissingError
    with the command to make one. Which generator a flow belongs to is checked by its record's sha256."""
    found = find_sidecar(generator_path, SUFFIX)
    if found is None:
        weights, _ = flow_paths(generator_path)
        raise WeightsMissingError(
            f"no RLS flow prior at {weights}: train one with `facerestore train-flow --generator {generator_path}"
            f" --out {weights}` (the authors did not release theirs)"
        )
    return found


def check_flow_generator(path: str | os.PathLike, generator_path: str | os.PathLike) -> None:
    """InputError (one line) unless the flow's record names ``generator_path``'s sha256: a flow fitted to one
    generator's W space is meaningless for another. A flow without a record, or a record without a digest,
    cannot be checked and is refused too (train it with `facerestore train-flow`)."""
    check_generator_record(path, generator_path, "flow",
                           f"train one for it: `facerestore train-flow --generator {generator_path}`")


def load_generator_flow(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                        generator_path: str | os.PathLike | None = None) -> MAF:
    """Load a flow written by :func:`save_generator_flow` (eval mode); with ``generator_path``, first check
    that the flow was fitted to that generator (:func:`check_flow_generator`)."""
    if not Path(path).is_file():
        raise WeightsMissingError(f"RLS flow prior not found: {os.fspath(path)}")
    if generator_path is not None:
        check_flow_generator(path, generator_path)
    _warn_if_unfinished(Path(path))
    return load_flow(path, map_location)


def _warn_if_unfinished(path: Path) -> None:
    """A flow whose training was stopped (its record says ``finished: false``) works but is not the flow asked
    for: RLS uses it, and says so once per load."""
    import json
    import warnings

    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no or unreadable record: check_flow_generator speaks for it where a generator is named
    if isinstance(record, dict) and record.get("finished") is False:
        warnings.warn(f"the RLS flow prior {path.name} comes from a stopped training (step {record.get('steps')} of "
                      f"{record.get('scheduled_steps')}): rerun the same `facerestore train-flow` command to finish "
                      "it", stacklevel=3)
