"""Teachers: any image embedding model the runtimes can run, as the distillation target.

A teacher is a ``.tflite``/``.onnx`` file (wrapped as a bundle on first use, with raw-pixel
preprocessing when its input is quantized, else the mean/std given) or an existing bundle
directory. It maps uint8 views (N, S, S, 3) at its own input size to unit vectors (N, D).

A quantized ``.tflite`` teacher (the shipped MobileNetV1) is wrapped together with its
``edgerec convert`` rewrite as ONNX (:mod:`edgerec.export.artifacts.tflite_onnx`: the same
integers, checked on this CPU) when ONNX Runtime is installed and the rewrite agrees; the
encoder then runs it on ONNX Runtime (its default), which takes about half of LiteRT's time
on a VNNI x86 CPU. A rewrite that is refused leaves the ``.tflite`` alone in the bundle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine, RuntimeOptions, available_engines, open_runtime
from edgerec.sdk import Bundle, Encoder, EncoderOptions, ImportOptions, import_model
from edgerec.sdk.errors import EdgeRecError
from edgerec.sdk.files import sha256_file
from edgerec.sdk.image import Layout

__all__ = ["Teacher"]

PathLike = Union[str, os.PathLike]



class Teacher:
    """A loaded teacher. Create with :meth:`load`; close with :meth:`close`."""

    def __init__(self, bundle: Bundle, encoder: Encoder):
        self.bundle = bundle
        self.encoder = encoder

    @classmethod
    def load(
        cls,
        source: PathLike,
        work_dir: PathLike,
        *,
        mean: Optional[tuple[float, float, float]] = None,
        std: Optional[tuple[float, float, float]] = None,
        num_threads: int = 1,
    ) -> Teacher:
        """Open a teacher model file or bundle directory.

        Args:
            source: ``.tflite``/``.onnx`` embedding model, or a bundle directory.
            work_dir: where a model file is wrapped as a bundle (``teacher-<sha>``).
            mean, std: the model's normalisation on [0, 1] pixels; omit for a model with a
                quantized (uint8/int8) input, which then gets raw 0..255 pixels.
            num_threads: engine threads per teacher instance.

        Raises:
            ExportError: the file is not a model, or its input is not an image.
        """
        source = Path(source)
        try:
            if source.is_dir():
                bundle = Bundle.open(source)
            else:
                if not source.is_file():
                    raise ExportError(f"No teacher model at {source}; pass --teacher MODEL.")
                digest = sha256_file(source)
                out = Path(work_dir) / f"teacher-{digest[:16]}"
                if (out / "manifest.json").is_file():
                    bundle = Bundle.open(out)
                else:
                    bundle = cls._wrap(source, out, mean, std)
            encoder = Encoder.create_from_bundle(
                bundle, EncoderOptions(num_threads=num_threads, batch_size=16)
            )
        except ExportError:
            raise
        except EdgeRecError as exc:
            raise ExportError(
                f"{source} cannot serve as a teacher: {exc} A teacher must map one image to "
                "one embedding vector (.tflite or .onnx)."
            ) from exc
        return cls(bundle, encoder)

    @classmethod
    def _wrap(cls, source: Path, out: Path, mean, std) -> Bundle:
        """Wrap ``source`` as the bundle ``out``, or load the one a concurrent process wrote.

        Several processes (the cache workers) may wrap the same teacher into the same work
        directory at once; the bundle is written to a temporary directory and renamed into
        place, so the first rename wins and the others find a complete bundle there.
        """
        options = cls._import_options(source, mean, std)
        rewrite = out.parent / f".{out.name}-{os.getpid()}.onnx"  # one per wrapping process
        try:
            models, options = cls._with_onnx_rewrite(source, options, rewrite)
            return import_model(models, out, options, force=True)
        except OSError as exc:
            if (out / "manifest.json").is_file():  # another process wrapped it first
                return Bundle.open(out)
            raise ExportError(
                f"Could not wrap the teacher {source} as a bundle in {out.parent}: {exc}. Check "
                "the free space and permissions of the work directory (--work-dir)."
            ) from exc
        finally:
            rewrite.unlink(missing_ok=True)

    @staticmethod
    def _with_onnx_rewrite(source: Path, options: ImportOptions, rewrite: Path
                           ) -> tuple[list[Path], ImportOptions]:
        """``[source]`` and ``options``, or with the ONNX rewrite of a raw-pixel ``.tflite``
        (written to ``rewrite``) and the mean/std that feed both files the same pixels, when
        ONNX Runtime is installed and the rewrite agrees with the ``.tflite`` on this CPU."""
        if (not options.raw_pixels or source.suffix.lower() != ".tflite"
                or Engine.ONNX not in available_engines()):
            return [source], options
        from edgerec.export.artifacts.tflite_onnx import ConversionOptions, tflite_to_onnx

        try:
            result = tflite_to_onnx(source, rewrite, ConversionOptions(force=True))
        except EdgeRecError:  # ops it does not rewrite, a disagreement, or ORT refusing it
            return [source], options
        return [source, rewrite], ImportOptions(mean=result.mean, std=result.std,
                                                name=options.name)

    @staticmethod
    def _import_options(source: Path, mean, std) -> ImportOptions:
        if mean is not None and std is not None:
            return ImportOptions(mean=tuple(mean), std=tuple(std), name="teacher")
        try:
            with open_runtime(source, options=RuntimeOptions(num_threads=1)) as rt:
                specs = rt.input_specs()
        except EdgeRecError as exc:
            raise ExportError(f"{source} is not a model the runtimes can load: {exc}") from exc
        if len(specs) == 1 and specs[0].quantized:
            return ImportOptions(raw_pixels=True, name="teacher")
        raise ExportError(
            f"{source.name} takes float input: state its normalisation with --teacher-mean and "
            "--teacher-std (on [0, 1] pixels)."
        )

    @property
    def input_size(self) -> int:
        return self.bundle.preprocessing.input_size

    @property
    def dim(self) -> int:
        return self.bundle.embedding_dim

    @property
    def identity(self) -> str:
        """Stable id of the teacher (its encoder id), used in cache keys."""
        return self.bundle.encoder_id

    def describe(self) -> dict:
        """What goes into the student bundle's ``teacher`` section."""
        art = self.encoder.artifact
        return {"name": self.bundle.manifest.name, "encoder_id": self.identity,
                "artifact": art.key, "sha256": art.sha256, "embedding_dim": self.dim,
                "input_size": self.input_size}

    def embed_views(self, views: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 views at :attr:`input_size` -> (N, D) float32 unit vectors."""
        views = np.asarray(views)
        s = self.input_size
        if views.dtype != np.uint8 or views.ndim != 4 or views.shape[1:] != (s, s, 3):
            raise ExportError(f"teacher views must be (N, {s}, {s}, 3) uint8, got "
                              f"{views.shape} {views.dtype}")
        pre = self.bundle.preprocessing
        mean = np.asarray(pre.mean, np.float32) * 255.0
        scale = 1.0 / (np.asarray(pre.std, np.float32) * 255.0)
        x = (views.astype(np.float32) - mean) * scale
        if (self.encoder.artifact.layout or Layout.NCHW) is Layout.NCHW:
            x = x.transpose(0, 3, 1, 2)
        return self.encoder.embed_preprocessed(np.ascontiguousarray(x))

    @property
    def engine(self) -> Engine:
        return self.encoder.engine

    def close(self) -> None:
        self.encoder.close()
