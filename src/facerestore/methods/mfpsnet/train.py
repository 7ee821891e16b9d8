"""Retraining a decoded FRSNet / MFPSNet with ``facerestore train`` (paper 001, section 3.4 / 4.2).

A config names ``method: mfpsnet`` and puts the architecture and the paper's training choices in ``model``::

    model:
      network: mfpsnet            # or frsnet
      genotype: released          # a preset name or a genotype JSON (e.g. a search's runs/NAME/genotype.json)
      nf: 32, growth: 16, ...     # FRSNet / MFPSNet width options (restorer.MODEL_KEYS)
      input_skip: true            # our option: each iteration adds a correction to its input (network.FRSNet)
      disentangle: true           # eq. 7-8: each batch also holds singly degraded copies of its faces
      singles: one                # "one" task drawn per face, or "all" four
      disabled_priors: []         # ablations: "parse", "heat", "dict" enter as zeros (training and inference)
      dictionary: {images: 400, k: 8}    # build the component dictionary from training faces (or a file path)
    losses: {perceptual: 0.001}   # eq. 9's lambda_per; model.perceptual picks phi (losses.RestorationLoss)

``data.task`` is the full degradation (eq. 10: ``mfpsnet-full``); the singly degraded copies come from
``search.single_degradations`` with a per-step seed, so a run resumes exactly. Both iterations of MFPSNet are
supervised (eq. 9 summed over them). The priors of the second iteration are computed, as at inference, from
the first iteration's output (detached): dlib landmarks -> heatmaps, Face Mesh (or landmark polygons) ->
parsing maps, the component dictionary -> feature maps (``priors.PriorExtractor``).

The export (``final.safetensors`` + ``final.json``) is what ``facerestore restore --method mfpsnet --weights``
reads: the JSON carries the genotype, widths, size, disabled priors and the dictionary file (in the run folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facerestore.errors import InputError
from facerestore.train.adapter import TrainAdapter, step_with_scaler

__all__ = ["MFPSNetAdapter"]

PRIOR_NAMES = ("parse", "heat", "dict")
_TRAIN_KEYS = {"network", "genotype", "disentangle", "singles", "disabled_priors", "dictionary", "perceptual"}


class MFPSNetAdapter(TrainAdapter):
    """One network (FRSNet or MFPSNet from a genotype), Adam on eq. 9 (see the module docstring)."""

    def __init__(self, cfg, device: torch.device) -> None:
        from facerestore.methods.mfpsnet.genotype import load_genotype
        from facerestore.methods.mfpsnet.losses import RestorationLoss
        from facerestore.methods.mfpsnet.network import FRSNET_KEYS, MODEL_KEYS, FRSNet, MFPSNet

        super().__init__(cfg, device)
        model = dict(cfg.model)
        unknown = set(model) - _TRAIN_KEYS - MODEL_KEYS
        if unknown:
            raise InputError(f"unknown mfpsnet model option(s): {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(_TRAIN_KEYS | MODEL_KEYS))}")
        unknown = set(cfg.losses) - {"perceptual"}
        if unknown:
            raise InputError(f"unknown mfpsnet loss(es): {', '.join(sorted(unknown))}; use perceptual (lambda_per)")
        self.network = model.get("network", "mfpsnet")
        if self.network not in ("mfpsnet", "frsnet"):
            raise InputError(f"model.network must be mfpsnet or frsnet, got {self.network!r}")
        self.genotype = load_genotype(model.get("genotype", "released"))
        self.widths = {k: bool(v) if k == "input_skip" else int(v) for k, v in model.items()
                       if k in (MODEL_KEYS if self.network == "mfpsnet" else FRSNET_KEYS)}
        self.disentangle = bool(model.get("disentangle", True))
        self.singles = model.get("singles", "one")
        if self.singles not in ("one", "all"):
            raise InputError(f"model.singles must be one or all, got {self.singles!r}")
        self.disabled = tuple(model.get("disabled_priors", ()))
        if set(self.disabled) - set(PRIOR_NAMES):
            raise InputError(f"model.disabled_priors: choose among {', '.join(PRIOR_NAMES)}, got {self.disabled}")
        if self.network == "frsnet" and (self.disabled or "dictionary" in model):
            raise InputError("FRSNet has no priors: drop model.disabled_priors / model.dictionary")
        cls = MFPSNet if self.network == "mfpsnet" else FRSNet
        self.nets = {"generator": cls(self.genotype, **self.widths).to(device)}
        weight = float(cfg.losses.get("perceptual", 0.001))
        from facerestore.methods.mfpsnet.losses import PERCEPTUAL_CHOICES

        if model.get("perceptual", "auto") not in PERCEPTUAL_CHOICES:
            raise InputError(f"model.perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}, got "
                             f"{model.get('perceptual')!r}")
        # lambda_per = 0 means L1 alone: no perceptual network is loaded (nor announced as a substitute)
        self.loss = RestorationLoss(model.get("perceptual", "auto") if weight > 0 else "none", weight).to(device)
        self.dictionary_file: Path | None = None
        self._extractor = None
        if self.network == "mfpsnet":
            self._extractor = self._build_extractor(model.get("dictionary"))

    # -- priors -----------------------------------------------------------------------------------------
    def _build_extractor(self, spec: Any):
        from facerestore.methods.mfpsnet.priors import PriorExtractor

        if spec is None or "dict" in self.disabled:
            return PriorExtractor(None)
        if isinstance(spec, str):
            self.dictionary_file = Path(spec)
            return PriorExtractor(self.dictionary_file)
        if not isinstance(spec, dict) or set(spec) - {"images", "k"}:
            raise InputError("model.dictionary must be a .safetensors path or {images: N, k: K}")
        self.dictionary_file = Path(self.cfg.output_dir) / self.cfg.name / "dictionary.safetensors"
        if not self.dictionary_file.is_file():  # built once per run folder: a resumed run reuses it
            build_dictionary(self.cfg, int(spec.get("images", 400)), int(spec.get("k", 8)), self.dictionary_file)
        return PriorExtractor(self.dictionary_file)

    def priors(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The second iteration's priors from ``images`` (the first iteration's output), disabled ones absent."""
        out = self._extractor(images.detach().clamp(0, 1))
        return {k: v for k, v in out.items() if k not in self.disabled}

    # -- training ---------------------------------------------------------------------------------------
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.cfg.optim
        return {"generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=o.lr, betas=o.betas,
                                              weight_decay=o.weight_decay)}

    def joint_batch(self, lq: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 8: the fully degraded batch plus (with disentanglement) its singly degraded copies."""
        from facerestore.methods.mfpsnet.search import _to_size, single_degradations
        from facerestore.train.data import step_seed

        if not self.disentangle:
            return lq, hq
        # per rank, as the trainer's own draws: every rank degrading its batch alike would waste the other ranks
        g = torch.Generator().manual_seed(step_seed(self.cfg.seed, self.step, self.rank, stream=11))
        singles = [_to_size(x, hq.shape[-2:]).clamp(0, 1) for x in single_degradations(hq.cpu(), g, self.singles)]
        return torch.cat([lq, *(x.to(lq) for x in singles)]), hq.repeat(1 + len(singles), 1, 1, 1)

    def _forward(self, net: torch.nn.Module, lq: torch.Tensor) -> list[torch.Tensor]:
        if self.network == "frsnet":
            return [net(lq)]
        return net(lq, prior_fn=self.priors, disabled=self.disabled)

    def train_step(self, lq, hq, optimizers, autocast, scaler) -> dict[str, Any]:
        lq, hq = self.joint_batch(lq, hq)
        net = self.nets["generator"]
        with autocast():
            outs = self._forward(net, lq)
        loss = self.loss([o.float() for o in outs], hq.float())
        step_with_scaler(loss, optimizers["generator"], scaler, net.parameters(), self.cfg.optim.grad_clip)
        return dict(self.loss.last)

    @torch.no_grad()
    def infer(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        return self._forward(net, lq)[-1].clamp(0, 1)

    def export_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"method": "mfpsnet", "network": self.network, "genotype": self.genotype.to_dict(),
                                "model": dict(self.widths), "size": self.cfg.data.size,
                                "disabled_priors": list(self.disabled), "perceptual": self.loss.kind}
        if self.dictionary_file is not None:
            meta["dictionary"] = self.dictionary_file.name if self.dictionary_file.parent == Path(
                self.cfg.output_dir) / self.cfg.name else str(self.dictionary_file.resolve())
        if self._extractor is not None:  # the restorer computes its parsing maps from the same source
            meta["parsing"] = "mesh" if self._extractor.use_mesh else "landmarks"
        return meta


def build_dictionary(cfg, images: int, k: int, path: Path) -> Path:
    """K-means component dictionary (``priors.ComponentDictionary``) over ``images`` HQ training faces of
    ``cfg.data`` (never validation files), at the training size; written atomically to ``path``."""
    from facerestore.io import atomic_write_safetensors
    from facerestore.methods.mfpsnet.priors import ComponentDictionary, PriorExtractor, load_feature_net
    from facerestore.train.data import load_images, split_files

    train, _ = split_files(cfg.data)
    if not train:
        raise InputError("model.dictionary: no training images to build the component dictionary from")
    step = max(1, len(train) // images)
    files = train[::step][:images]
    hq = load_images(files, cfg.data.size).float().div(255.0)
    landmarks = PriorExtractor(None, use_mesh=False).landmarks(hq)
    d = ComponentDictionary.build(hq, landmarks, load_feature_net(), k=k, seed=cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # stored in float16 (half the size; the atoms are cluster means, loaded back as float32)
    atomic_write_safetensors(path, {n: a.half().contiguous() for n, a in d.atoms.items()})
    return path
