"""Model files for a bundle, one copy of each step for every model role (encoder, scorer):

- :mod:`.convert`: torch -> fp32 ONNX and TFLite (:class:`~.convert.ModelIO` names a role's
  tensors and sample shape);
- :mod:`.calibration`, :mod:`.quantize_onnx` (ONNX Runtime static QDQ, per quantization
  target), :mod:`.quantize_tflite` (PT2E -> LiteRT): int8 quantization;
- :mod:`.ladder`: the gated ladder of remedies and the ``Gate`` protocol;
- :mod:`.qat`: quantization-aware fine-tuning, the ONNX ladder's last rung;
- :mod:`.build`: the driver (fp32 files checked against torch, int8 ladders per engine);
- :mod:`.encoder`: the encoder's gate, ladders and build wrapper (the scorer's live in
  :mod:`edgerec.export.scorer.artifacts`);
- :mod:`.parity` (embedding parity) and :mod:`.macs` (MAC counts);
- :mod:`.tflite_onnx`: a quantized TFLite CNN rewritten as ONNX with the same integers
  (``edgerec convert``; the export's uint8 teacher runs on it).
"""

__all__: list[str] = []
