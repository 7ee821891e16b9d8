"""``Restorer``: the one wrapper around every method's network call (the descriptor idea of spandrel).

A method class subclasses :class:`Restorer`, sets its :class:`~facerestore.methods.spec.MethodSpec` as the
class attribute ``spec`` and implements only ``_restore(x, *, fidelity, refs, **options)``: the network call
on a batch already on the right device, in the right dtype and at the right size. :meth:`Restorer.restore`
owns everything else, once for every method:

- argument checks: (B, 3, H, W) tensors, sides >= ``spec.min_side``, fidelity supported and in [0, 1],
  references present when the method needs them (one-line :class:`InputError` otherwise);
- device and dtype: the input is moved to the restorer's device and parameter dtype; the result comes back
  in the input's device and dtype, clamped to [0, 1];
- size: crops are resized to ``spec.size`` (area when shrinking, bicubic when enlarging) and, for methods with
  ``output="input"``, back to the input's size; ``size=`` asks for any output size;
- precision: :meth:`set_half` has one meaning, fp16 on CUDA/MPS and bf16 on the CPU, refused unless the spec
  lists that precision.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from facerestore.errors import FaceRestoreError, InputError, RefsMismatchError
from facerestore.methods.spec import MethodSpec
from facerestore.nn.devices import half_dtype, precision_name

__all__ = ["DETAIL_TOLERANCE", "MIN_REF_SIDE", "REFS_MAX_DISTANCE", "Restorer", "StepProgress", "check_images",
           "check_refs", "check_refs_identity", "detail_side", "refs_check_distance", "resize_crop"]


MIN_REF_SIDE = 16  # smaller faces carry no identity dlib can read (its chips are 150 px)
# dlib distance between a (possibly heavily degraded) face and references beyond which they are taken for another
# person: dlib's same-person threshold is 0.6 on clean faces; degradation adds about 0.1-0.2 (measured in
# benchmarks/honestface_refs.py, which reports every distance next to the refusals)
REFS_MAX_DISTANCE = 0.75


def refs_check_distance(distances: torch.Tensor) -> float:
    """The reference check's distance of one face: the median of its (R,) dlib distances to the references (one
    odd photo among them does not decide; for an even count the mean of the middle two, so that with two
    references one matching photo does not pass the other)."""
    return float(distances.float().quantile(0.5))


def check_refs_identity(distances: torch.Tensor, threshold: float = REFS_MAX_DISTANCE, force: bool = False) -> float:
    """:func:`refs_check_distance` of (R,) face-to-reference dlib distances; :class:`RefsMismatchError` (one line)
    above ``threshold`` unless ``force``. Every method that takes references checks them with this."""
    d = refs_check_distance(distances)
    if d > threshold and not force:
        raise RefsMismatchError(refs_mismatch_message(d, threshold), d)
    return d


def refs_mismatch_message(distance: float, threshold: float = REFS_MAX_DISTANCE, faces: int = 1) -> str:
    """The one line users get when references look like another person than the face (``faces`` > 1: than every
    face of the photo, ``distance`` the closest)."""
    if faces <= 1:
        where = f"the face (dlib distance {distance:.2f} > {threshold:.2f})"
    else:
        where = f"any of the {faces} faces (the closest: dlib distance {distance:.2f} > {threshold:.2f})"
    return (f"the reference photos look like a different person than {where}; use photos of the same person, or "
            "--force-refs to use them anyway")


def check_refs(refs: Any, name: str) -> None:
    """One-line InputError unless ``refs`` is None, a sequence (photos the pipeline prepares) or a float tensor
    (R, 3, S, S) of R >= 1 square faces, S >= ``MIN_REF_SIDE``, with finite values in [0, 1]."""
    if refs is None or not isinstance(refs, torch.Tensor):
        return
    want = f"{name} takes refs as a (R, 3, S, S) float tensor of aligned reference faces in [0, 1] (R >= 1, " \
           f"S >= {MIN_REF_SIDE})"
    shape = tuple(refs.shape)
    if refs.ndim != 4 or shape[1] != 3 or shape[0] < 1 or shape[2] != shape[3] or shape[2] < MIN_REF_SIDE:
        raise InputError(f"{want}, got shape {shape}")
    if not refs.is_floating_point():
        raise InputError(f"{want}, got dtype {str(refs.dtype).replace('torch.', '')}")
    lo, hi = float(refs.min()), float(refs.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{want}, got values in [{lo:g}, {hi:g}]")


def check_images(lq: Any, name: str, min_side: int = 1) -> None:
    """InputError (one line) unless ``lq`` is a (B, 3, H, W) tensor with H, W >= ``min_side``."""
    if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3:
        shape = tuple(lq.shape) if isinstance(lq, torch.Tensor) else type(lq).__name__
        raise InputError(f"{name} expects (B, 3, H, W) images in [0, 1], got {shape}")
    if not lq.is_floating_point():  # uint8 0..255 taken as [0, 1] would come out as a black-and-white mask
        raise InputError(f"{name} expects floating-point images in [0, 1], got {lq.dtype} (divide 8-bit images by "
                         "255)")
    if lq.shape[0] < 1:
        raise InputError(f"{name} got an empty batch")
    if not bool(torch.isfinite(lq).all()):  # one NaN pixel would fail (or blacken) the whole batch later
        raise InputError(f"{name}: the images hold NaN or infinite values")
    if lq.shape[-1] < min_side or lq.shape[-2] < min_side:
        raise InputError(f"{name}: face crop {lq.shape[-1]}x{lq.shape[-2]} is too small (need >= {min_side} px)")


def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, 3, H, W) images to ``size`` (area when shrinking, bicubic when enlarging; float32 math).

    The one resizing rule of restoration: used by :meth:`Restorer.restore` both ways, so that a method sees
    the same pixels whether it is called from the API, the photo pipeline or a benchmark.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    xf = x.float()
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        y = F.interpolate(xf, size=size, mode="area")
    else:
        y = F.interpolate(xf, size=size, mode="bicubic", align_corners=False)
    return y.clamp(0, 1).to(x.dtype)


# RMS (in [0, 1] units) of the detail a face may lose and still count as "carried" by a smaller side: 1.5 grey
# levels of 255. Chosen from crops measured before benchmarks/blind_detail.py ran: two held-out ffhq256 faces (00020,
# 00030, also two of that benchmark's three) enlarged into 512 px crops lose 0.8-1.0 levels at 256 and 4.3-5.2 at
# 128; the README's astronaut (a ~60 px face) 1.3 at 64 and 3.5 at 32; real crops of GFPGAN's test set 0.7-1.4 at
# 256 (a noisy one 5.4).
DETAIL_TOLERANCE = 1.5 / 255


def detail_side(x: torch.Tensor, *, tolerance: float = DETAIL_TOLERANCE, min_side: int = 16) -> list[int]:
    """The resolution each face's detail actually has: per image of ``x`` (B, C, S, S) in [0, 1], the smallest power
    of two s in [``min_side``, S] such that ``x`` shrunk to s and enlarged back (:func:`resize_crop` both ways)
    differs from ``x`` by at most ``tolerance`` RMS; S itself (any side) when no smaller s does.

    A small face of a photo enlarged into a 512 px crop has the detail of its footprint in the photo (the
    README's astronaut: 64); a blurred face, of its blur; noise and JPEG ringing keep the full side. The blind
    modes of the StyleGAN methods compare the prior's face with the input at this side, so that the prior, not
    the enlargement's blur, supplies the finer detail."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"detail_side expects square images (B, C, S, S), got {tuple(x.shape)}")
    full = int(x.shape[-1])
    xf = x.float()
    sides = [full] * x.shape[0]
    undecided = list(range(x.shape[0]))
    s = 1 << max(int(min_side) - 1, 0).bit_length()  # the smallest power of two >= min_side
    while s < full and undecided:
        back = resize_crop(resize_crop(xf[undecided], (s, s)), (full, full))
        rms = (back - xf[undecided].clamp(0, 1)).square().mean(dim=(1, 2, 3)).sqrt()
        for i, e in zip(list(undecided), rms.tolist()):
            if e <= tolerance:
                sides[i] = s
                undecided.remove(i)
        s *= 2
    return sides


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1] (the knobs: fidelity, blend), else a one-line InputError naming ``name``."""
    try:
        ok = 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be in [0, 1], got {value}")
    return float(value)


class StepProgress:
    """A progress bar for the optimisation methods: ``update(phase, step, loss)`` per step, with the phase and
    the loss in the bar and tqdm's rate and ETA; silent when ``enabled`` is False. One bar per restore call
    (each face of a photo), on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=int(total), desc=desc, unit="step", leave=False, disable=not enabled,
                        dynamic_ncols=True)

    def update(self, phase: str, step: int, loss: float) -> None:
        self.bar.set_postfix_str(f"{phase} loss {loss:.4g}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def weights_sha256(ref: str | None) -> str | None:
    """The sha256 of the weights ``ref`` names: a zoo entry's published digest (checked when it was fetched; None
    for a package folder of several files), a file's own (computed once per file state), None when unknown."""
    if ref is None:
        return None
    from facerestore import zoo
    from facerestore.zoo.refs import resolve_weights

    if zoo.has_entry(ref):
        digest = zoo.get_entry(ref).sha256
        return digest if len(digest) == 64 else None
    try:
        path = resolve_weights(ref)
        st = path.stat()
    except (FaceRestoreError, OSError):
        return None
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns) if path.is_file() else None


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from facerestore import zoo

    return zoo.sha256_file(path)


class Restorer(torch.nn.Module):
    """Base class of every restoration method; see the module docstring.

    Subclasses set ``spec`` (class attribute; an instance may replace it with a copy when its weights say
    more, e.g. their training size) and implement :meth:`_restore`.
    """

    spec: ClassVar[MethodSpec]
    _half: bool = False
    progress: bool = True  # per-call progress bars of the optimisation methods (the CLI's -q turns them off)
    default_fidelity: float | None = None  # what fidelity=None means, for methods with the knob (records say it)
    # methods that compare each face with its references before using them (:meth:`refs_distances`) and refuse
    # another person's unless ``force_refs=True``; the photo pipeline then decides face by face
    checks_refs: bool = False

    # -- the network call: the only thing a method implements ---------------------------------------------
    def _restore(self, x: torch.Tensor, *, fidelity: float | None, refs: torch.Tensor | None,
                 **options: Any) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """(B, 3, S, S) on this restorer's device and dtype -> restored (B, 3, S', S') (any float dtype), or
        ``(images, details)`` when a method-specific option asks for details."""
        raise NotImplementedError

    def _refs_distances(self, x: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        """Per face of ``x`` (prepared as in :meth:`restore`): the reference check's distance, or None when this
        restorer would not use ``refs`` (e.g. its ``ref_weight`` is 0). Methods with ``checks_refs`` implement it."""
        raise NotImplementedError

    def refs_distances(self, lq: torch.Tensor, refs: torch.Tensor) -> list[float] | None:
        """The reference check without restoring: for each face of ``lq`` (B, 3, H, W) in [0, 1], resized to
        ``spec.size`` as :meth:`restore` does with crops, its median dlib distance to ``refs`` (R, 3, S, S), the
        number :meth:`restore` compares with ``REFS_MAX_DISTANCE`` (0.75); None when this restorer would ignore the
        references. Only for methods with ``checks_refs``."""
        if not self.checks_refs:
            raise NotImplementedError(f"{self.spec.name} does not check references")
        check_images(lq, self.spec.name, min_side=self.spec.min_side)
        check_refs(refs, self.spec.name)
        size = (self.spec.size, self.spec.size)
        dtype = self.dtype if self.casts_input else torch.float32  # what restore() hands the method (casts_input)
        x = resize_crop(lq.to(self.device).float(), size).to(dtype)
        refs = resize_crop(refs.to(self.device).float(), size).to(dtype)
        with torch.no_grad():
            return self._refs_distances(x, refs)

    min_steps = 1  # the smallest ``--steps`` budget_options accepts (an optimisation method's phases need one each)
    # whether restore() hands _restore the input in the model's precision (bf16 / fp16 under set_half); the StyleGAN
    # methods keep float32 targets: only their synthesis network is reduced, their latents and losses are float32,
    # and the face's blind side (and so its batch) must be measured on the crop the pipeline measured
    casts_input = True

    @classmethod
    def budget_options(cls, steps: int) -> dict[str, Any]:
        """Constructor options that cap an optimisation method at about ``steps`` steps per face (``--steps``);
        InputError for methods that do not optimise."""
        raise InputError(f"method {cls.spec.name!r} runs a fixed network: --steps applies to optimisation methods")

    # -- what the wrapper owns ------------------------------------------------------------------------------
    @classmethod
    def default_weights(cls) -> Path | str | None:
        """The spec's default weights: a built-in file's path, or a zoo entry's name (its loader reads it from
        the cache); with several listed, the first available, announcing the fallback in one warning line.
        None when the method ships none."""
        from facerestore import zoo
        from facerestore.zoo.refs import BUILTIN_PREFIX, resolve_weights

        refs = cls.spec.weights
        if refs is None:
            return None
        refs = (refs,) if isinstance(refs, str) else tuple(refs)
        for i, ref in enumerate(refs):
            builtin = ref.startswith(BUILTIN_PREFIX)
            if builtin or zoo.is_available(ref) or i == len(refs) - 1:
                if i > 0:
                    warnings.warn(f"{cls.spec.name}: the real prior '{refs[0]}' is not in the cache (`facerestore "
                                  f"models download {refs[0]}`); using {ref}", stacklevel=3)
                return resolve_weights(ref) if builtin else ref
        return None  # pragma: no cover - the loop always returns

    def weights_or_default(self, weights: str | os.PathLike | None) -> str | os.PathLike | None:
        """``weights`` when given (a ``builtin:FILE`` reference resolved to its path), else the spec's default."""
        from facerestore.zoo.refs import BUILTIN_PREFIX, resolve_weights

        if weights is None:
            return self.default_weights()
        return resolve_weights(weights) if os.fspath(weights).startswith(BUILTIN_PREFIX) else weights

    def with_spec(self, **changes: Any) -> None:
        """Replace this instance's spec by a copy with ``changes`` (what its loaded weights determine); a new size
        replaces the class's size label (the instance knows its own)."""
        if "size" in changes:
            changes.setdefault("size_label", None)
        self.spec = dataclasses.replace(self.spec, **changes)

    @property
    def device(self) -> torch.device:
        """Device of the parameters (or buffers); CPU for a restorer without either."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: the reduced precision after :meth:`set_half`, else the floating parameters' dtype."""
        if self._half:
            return half_dtype(self.device)
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    @property
    def precision(self) -> str:
        """"fp32", "fp16" or "bf16": what :meth:`restore` computes in."""
        return precision_name(self.dtype)

    # the weights this restorer was loaded with, as given or the method's default (``builtin:FILE``, a zoo entry
    # name or a path; set by the registry's loader; None for an object built directly)
    weights_used: str | None = None

    def describe(self) -> dict[str, Any]:
        """What an output's JSON records of this restorer: name, paper, size, precision, the weights used (reference
        and sha256) and their licence (several are non-commercial: say so wherever they are used; a zoo entry's
        own licence when the weights are one), and the degradations it was trained on."""
        spec = self.spec
        ref = self.weights_used
        licence = spec.weights_licence
        if ref is not None:
            from facerestore import zoo

            if zoo.has_entry(ref):  # the entry's own licence, with what this instance added (an encoder's note)
                base = type(self).spec.weights_licence or ""
                added = licence[len(base):] if licence and base and licence.startswith(base) else ""
                licence = zoo.get_entry(ref).licence + added
        return {"name": spec.name, "paper": spec.paper, "size": spec.size, "precision": self.precision,
                "weights": ref, "weights_sha256": weights_sha256(ref), "weights_licence": licence,
                "trained_on": list(spec.trained_on)}

    def set_half(self, enabled: bool = True) -> Restorer:
        """Reduced precision on the current device (fp16 on CUDA/MPS, bf16 on CPU), or back to fp32.

        InputError when the spec does not list that precision. Returns ``self``.
        """
        if not enabled:
            self._half = False
            return self.float()
        dtype = half_dtype(self.device)
        if not self.spec.supports_half(self.device):
            name = precision_name(dtype)
            raise InputError(f"method {self.spec.name!r} does not support half precision ({name} on "
                             f"{self.device.type}; supported: {', '.join(self.spec.precisions)}); drop --half")
        self._half = True
        for module in self.half_modules():
            module.to(dtype)
        return self

    def half_modules(self) -> list[torch.nn.Module]:
        """What :meth:`set_half` converts: the whole restorer by default. Methods whose latents, priors or losses
        must stay float32 name only their heavy network (a convert-then-back round trip would round those
        weights to bf16 and leave them there)."""
        return [self]

    def fidelity_used(self, fidelity: float | None) -> float | None:
        """The fidelity a call with ``fidelity`` runs at: the value given, else the method's default (None for
        methods without the knob), so that records never say "null" for a default that behaves like 1."""
        if fidelity is not None:
            return float(fidelity)
        if not self.spec.supports_fidelity or self.default_fidelity is None:
            return None
        return float(self.default_fidelity)

    def batch_key(self, crop: torch.Tensor) -> Any:
        """Faces whose keys differ are never restored in one batch (:func:`facerestore.pipeline.restore_crops`):
        methods whose work follows the batch (robust-inversion's and RLS's blind working side is the batch's
        largest) give each face's own, so a face's result does not depend on its neighbours. ``crop``: (1, 3, S, S)
        float in [0, 1] at the model's size. None (the default): any faces batch together."""
        return None

    def unused_refs_reason(self) -> str | None:
        """Why references would do nothing with this restorer's current settings (None: they act); callers say so
        instead of reading them for nothing."""
        return None

    def check_options(self, *, fidelity: float | None = None, refs: Any = None) -> None:
        """One-line InputError for a fidelity the method lacks or outside [0, 1], missing references, or references that
        are not (R, 3, S, S) faces in [0, 1] (:func:`check_refs`, for the methods that use them)."""
        name = self.spec.name
        if fidelity is not None:
            if not self.spec.supports_fidelity:
                raise InputError(f"method {name!r} has no fidelity control; drop --fidelity")
            check_unit_interval("fidelity", fidelity)
        if self.spec.needs_refs and refs is None:
            raise InputError(f"method {name!r} needs reference photos of the same person (refs=, --refs DIR)")
        takes_refs = self.spec.uses_refs or self.spec.needs_refs
        if refs is not None and not takes_refs:  # never a flag that silently does nothing
            raise InputError(f"method {name!r} does not use reference photos; drop --refs or choose a method tagged "
                             "'refs' in `facerestore restore --list-methods`")
        if takes_refs:
            check_refs(refs, name)

    def restore(
        self,
        lq: torch.Tensor,
        *,
        refs: torch.Tensor | None = None,
        fidelity: float | None = None,
        size: tuple[int, int] | None = None,
        **options: Any,
    ) -> Any:
        """Restore face images ``lq`` (B, 3, H, W) in [0, 1].

        Returns (B, 3, H', W') in ``lq``'s dtype and device, in [0, 1]: H' x W' = ``size`` when given, else the
        input's size (``spec.output == "input"``) or the model's ``spec.size`` ("model"). ``options`` are the
        method's own (e.g. ``task=``/``params=`` of the StyleGAN methods, which then take ``lq`` as the task's
        observation at its own size); a method returning details gives ``(images, details)``.
        """
        spec = self.spec
        check_images(lq, spec.name, min_side=spec.min_side)
        whole = (numbers.Integral,)
        if size is not None and not (isinstance(size, (tuple, list)) and len(size) == 2
                                     and all(isinstance(v, whole) and not isinstance(v, bool) and 1 <= v <= 16384
                                             for v in size)):
            raise InputError(f"{spec.name}: size must be an (H, W) pair of whole numbers in 1..16384, got {size!r}")
        if refs is not None and not isinstance(refs, torch.Tensor):
            if isinstance(refs, (list, tuple)) and not refs:
                refs = None  # no photos: as without references
            else:  # photos go through the face pipeline first; only aligned face tensors reach a network
                raise InputError(f"{spec.name}: restore() takes refs as a (R, 3, S, S) tensor of aligned faces; "
                                 "prepare photos with facerestore.pipeline.prepare_refs (or pass them to "
                                 "restore_photo(refs=...))")
        self.check_options(fidelity=fidelity, refs=refs)
        dev, dtype = self.device, self.dtype
        x = lq.to(dev)
        # "model" methods take the observation as it is (a task's degraded target, an RLS low-resolution face)
        # unless the caller asks for crops in and out (``size``, as the photo pipeline does)
        if spec.output == "input" or size is not None:
            x = resize_crop(x.float(), (spec.size, spec.size))
        x = x.to(dtype) if self.casts_input else x.float()
        if refs is not None:
            refs = resize_crop(refs.to(dev).float(), (spec.size, spec.size))
            refs = refs.to(dtype) if self.casts_input else refs
        grad = torch.enable_grad() if spec.unsupervised else torch.no_grad()
        if options:  # an option this method does not have: one line, not a TypeError from deep inside
            import inspect

            params = inspect.signature(self._restore).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                unknown = sorted(set(options) - set(params))
                if unknown:
                    own = [k for k in list(params)[1:] if k not in ("fidelity", "refs")]  # after the images
                    raise InputError(f"{spec.name}: unexpected keyword argument {unknown[0]!r}; its options are "
                                     f"{', '.join(own) or 'none'}")
        with grad:
            out = self._restore(x, fidelity=None if fidelity is None else float(fidelity), refs=refs, **options)
        details = None
        if isinstance(out, tuple):
            out, details = out
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[:2] != lq.shape[:2]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"restorer {spec.name!r} returned {shape} for input {tuple(x.shape)}")
        y = out.detach().float().clamp(0, 1)
        target = size if size is not None else (tuple(lq.shape[-2:]) if spec.output == "input" else None)
        if target is not None:
            y = resize_crop(y, target)
        y = y.to(device=lq.device, dtype=lq.dtype)
        return y if details is None else (y, details)
