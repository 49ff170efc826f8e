"""edgerec export (torch): photos and events -> a verified bundle.

- :mod:`.data`: scanning and cleaning the photos, splits, augmented views;
- :mod:`.distill`: teachers, the cached teacher features, the student, distillation, whitening;
- :mod:`.artifacts`: conversion to ONNX and TFLite, int8 quantization with gated ladders,
  parity, MACs;
- :mod:`.scorer`: the personalised scorer's data, training and files;
- :mod:`.options`, :mod:`.pipeline`, :mod:`.report`: ``edgerec export`` itself;
  :mod:`.cli`: the export's commands.
"""

__all__: list[str] = []
