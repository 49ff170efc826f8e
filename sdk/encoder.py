"""Images -> L2-normalised embedding vectors, on the engine and precision the device picks.

When the bundle carries an encoder whitening (:mod:`.whitening`), the engine's normalised
output is whitened and normalised again, the same on every engine and precision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Union

import numpy as np
from edgerec.runtimes import Device, Engine, RuntimeOptions, available_engines, open_runtime
from edgerec.sdk.bench.profile import default_profile_path, read_device_profile
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import WHITENING_FORMAT, ArtifactSpec, Layout, Precision, Role
from edgerec.sdk.errors import (
    InferenceError,
    InvalidImageError,
    ModelError,
    RuntimeUnavailableError,
)
from edgerec.sdk.image import ImageInput, ImageLimits, preprocess
from edgerec.sdk.vectors import l2_normalize
from edgerec.sdk.whitening import Whitening

__all__ = ["AUTO", "Encoder", "EncoderOptions", "l2_normalize"]


AUTO = "auto"
"""``EncoderOptions(engine=AUTO, precision=AUTO)``: let the device profile (or the fixed rule)
choose."""


@dataclass(frozen=True)
class EncoderOptions:
    """How to run a bundle's encoder.

    Attributes:
        engine: ``Engine.ONNX``, ``Engine.TFLITE`` or ``"auto"`` (the default; ``None`` means
            the same). ``auto`` takes the engine the device profile measured fastest for this
            bundle (``edgerec bench --choose``; :mod:`edgerec.sdk.bench.profile`), else the
            first installed engine the bundle has an encoder for (ONNX Runtime first).
        precision: ``Precision.FP32``, ``Precision.INT8`` or ``"auto"`` (the default; ``None``
            means the same): the device profile's fastest, else fp32 before int8. int8 is
            smaller but not always faster, so the device measures rather than assumes.
        num_threads: engine threads; ``None`` is the profile's choice when the profile picks
            the artifact, else the engine's default.
        device: ``cpu``; ``cuda`` (ONNX Runtime) or ``gpu`` (LiteRT delegate) raise when absent.
        batch_size: images preprocessed and run per engine call.
        limits: size guards applied to every image before it is decoded.
        device_profile: the device profile file to read; ``None`` is the default location
            (``$EDGEREC_DEVICE_PROFILE``, else ``~/.cache/edgerec/device-profile.json``).
        use_device_profile: ``False`` ignores any device profile (the fixed rule only).
    """

    engine: Union[Engine, str, None] = AUTO
    precision: Union[Precision, str, None] = AUTO
    num_threads: Optional[int] = None
    device: Device = Device.CPU
    batch_size: int = 32
    limits: ImageLimits = field(default_factory=ImageLimits)
    device_profile: Union[str, os.PathLike, None] = None
    use_device_profile: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("engine", Engine), ("precision", Precision)):
            value = getattr(self, name)
            if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
                object.__setattr__(self, name, AUTO)
            else:
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    choices = [m.value for m in kind] + [AUTO]
                    raise ValueError(f"{name} must be one of {choices}, got {value!r}.") from None
        object.__setattr__(self, "device", Device(self.device))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}.")


def _choose(bundle: Bundle, options: EncoderOptions) -> tuple[ArtifactSpec, EncoderOptions, str]:
    """The artifact, the options to open it with (threads filled in from the profile) and
    how it was chosen: ``"options"``, ``"device profile <path>"`` or ``"rule"``."""
    engine = None if options.engine == AUTO else options.engine
    precision = None if options.precision == AUTO else options.precision
    engines = available_engines() if engine is None else [engine]
    if not engines:
        raise RuntimeUnavailableError(
            "No inference engine is installed; `pip install edgerec[onnx]` or "
            "`pip install edgerec[tflite]`."
        )
    if engine is not None and precision is not None:
        return bundle.select(Role.ENCODER, engine, precision, engines), options, "options"
    if options.use_device_profile:
        where = options.device_profile
        profile = read_device_profile(bundle.encoder_id, where)
        if profile is not None and profile.matches_this_machine():
            have = [(a.engine, a.precision) for a in bundle.artifacts(Role.ENCODER)
                    if a.engine in engines]
            pick = profile.pick(engines, precision, options.num_threads, have)
            if pick is not None:
                artifact = bundle.select(Role.ENCODER, pick.engine, pick.precision, engines)
                if options.num_threads is None:
                    options = replace(options, num_threads=pick.threads)
                path = default_profile_path() if where is None else where
                return artifact, options, f"device profile {path}"
    return bundle.select(Role.ENCODER, engine, precision, engines), options, "rule"


def _read_whitening(bundle: Bundle) -> Optional[Whitening]:
    """The bundle's encoder whitening, or None; raises ModelError for one this edgerec can't use."""
    specs = bundle.weights(Role.ENCODER)
    if not specs:
        return None
    for spec in specs:
        if spec.format != WHITENING_FORMAT:
            raise ModelError(
                f"encoder weights {spec.file} are format {spec.format!r}; this edgerec reads "
                f"{WHITENING_FORMAT!r}: upgrade edgerec (`pip install -U edgerec`)."
            )
    if len(specs) > 1:
        raise ModelError(f"the bundle lists {len(specs)} encoder whitening files; export it again.")
    whitening = Whitening.from_npz(bundle.read_weights(specs[0]))
    if whitening.dim != bundle.embedding_dim:
        raise ModelError(
            f"encoder whitening {specs[0].file} is {whitening.dim}-d but the encoder is "
            f"{bundle.embedding_dim}-d; export the bundle again."
        )
    return whitening


class Encoder:
    """A bundle's image encoder on one engine. Create with :meth:`create_from_bundle_path`.

    Example::

        with Encoder.create_from_bundle_path("bundle/") as enc:
            vectors = enc.embed(["a.jpg", "b.jpg"])   # (2, D) float32, unit rows
    """

    def __init__(self, bundle: Bundle, artifact: ArtifactSpec, options: EncoderOptions):
        self.bundle = bundle
        self.artifact = artifact
        self.options = options
        self.chosen_by = "options"
        """How the artifact was chosen: ``"options"``, ``"device profile <path>"`` or
        ``"rule"`` (the first installed engine, fp32 before int8)."""
        self.whitening = _read_whitening(bundle)
        # The engine gets the very bytes whose sha256 was checked (no re-read by path).
        self._runtime = open_runtime(
            bundle.read_artifact(artifact),
            artifact.engine,
            RuntimeOptions(num_threads=options.num_threads, device=options.device),
            name=artifact.file,
        )
        self._input = artifact.inputs[0].name
        self._layout = artifact.layout or Layout.NCHW
        inputs = [s.name for s in self._runtime.input_specs()]
        outputs = [s.name for s in self._runtime.output_specs()]
        if inputs != [self._input] or artifact.output not in outputs:
            self._runtime.close()
            raise ModelError(
                f"{artifact.file} takes {inputs} and gives {outputs}, but the manifest lists the "
                f"input {self._input!r} and the output {artifact.output!r}; the bundle is "
                "inconsistent: export it again."
            )

    @classmethod
    def create_from_bundle(
        cls, bundle: Bundle, options: EncoderOptions = EncoderOptions()
    ) -> Encoder:
        """Open the encoder artifact of a loaded bundle that ``options`` ask for.

        ``auto`` engine or precision: the device profile's fastest allowed artifact when the
        profile has this bundle's ``encoder_id`` measured on this CPU, else the fixed rule
        (:attr:`chosen_by` says which).

        Raises:
            ArtifactNotFoundError: the bundle has no encoder for that engine/precision.
            RuntimeUnavailableError: the engine (or device) is not installed here.
            BundleIntegrityError: the artifact's bytes no longer match its sha256 (the file
                changed after the bundle was opened).
            ModelError: the model is not loadable, or its tensors are not the manifest's.
        """
        artifact, options, chosen_by = _choose(bundle, options)
        encoder = cls(bundle, artifact, options)
        encoder.chosen_by = chosen_by
        return encoder

    @classmethod
    def create_from_bundle_path(
        cls, path: Union[str, os.PathLike], options: EncoderOptions = EncoderOptions()
    ) -> Encoder:
        """Load (and verify) the bundle at ``path``, then :meth:`create_from_bundle`."""
        return cls.create_from_bundle(Bundle.open(path), options)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.bundle.embedding_dim

    @property
    def encoder_id(self) -> str:
        """Identity of the network (shared by all engines/precisions of one export)."""
        return self.bundle.encoder_id

    @property
    def engine(self) -> Engine:
        return self.artifact.engine

    @property
    def precision(self) -> Precision:
        return self.artifact.precision

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Images -> this artifact's input batch (float32, NCHW or NHWC)."""
        return preprocess(images, self.bundle.preprocessing, self._layout,
                          limits=self.options.limits)

    def embed_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch (from :meth:`preprocess`) -> (N, D) float32 unit vectors."""
        out = self._runtime.run({self._input: batch})[self.artifact.output]
        vectors = out.reshape(out.shape[0], -1)
        if vectors.shape[1] != self.dim:
            raise InferenceError(
                f"{self.artifact.file} produced {vectors.shape[1]}-d vectors but the manifest "
                f"says {self.dim}; the bundle is inconsistent: export it again."
            )
        vectors = l2_normalize(vectors)
        return vectors if self.whitening is None else self.whitening.apply(vectors)

    def embed(
        self,
        images: Sequence[ImageInput],
        progress: Optional[Callable[[int], None]] = None,
    ) -> np.ndarray:
        """Embed images.

        Args:
            images: paths, bytes, binary file objects, PIL images or uint8 arrays.
            progress: called with the number of images finished after each batch.

        Returns:
            (N, D) float32, each row of unit L2 norm (zero rows only if the model outputs 0).

        Raises:
            InvalidImageError: an image cannot be used (the message names its index), or
                ``images`` is None.
        """
        if images is None:
            raise InvalidImageError("embed() got None instead of a list of images; pass a "
                                    "list (paths, bytes, file objects, PIL images or arrays).")
        if isinstance(images, (str, bytes, np.ndarray)) or hasattr(images, "read"):
            raise TypeError("embed() takes a sequence of images; use embed_one() for one image.")
        images = list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        step = self.options.batch_size
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = preprocess(chunk, self.bundle.preprocessing, self._layout, first_index=start,
                               limits=self.options.limits)
            out[start : start + len(chunk)] = self.embed_preprocessed(batch)
            if progress is not None:
                progress(start + len(chunk))
        return out

    def embed_one(self, image: ImageInput) -> np.ndarray:
        """One image -> (D,) float32 unit vector."""
        return self.embed([image])[0]

    def close(self) -> None:
        """Release the engine; idempotent."""
        self._runtime.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Encoder({self.artifact.key}, dim={self.dim}, "
            f"input={self.bundle.preprocessing.input_size}px {self._layout.value})"
        )
