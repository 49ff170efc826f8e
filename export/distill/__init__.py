"""Distillation: teachers (:mod:`.teacher`, :mod:`.teacher_torchvision`), the cached teacher
features (:mod:`.cache`), the student (:mod:`.student`), training (:mod:`.train`) and the
encoder's whitening (:mod:`.whiten`)."""

__all__: list[str] = []
