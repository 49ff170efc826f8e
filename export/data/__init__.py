"""The export's data: scanning and cleaning photos (:mod:`.scan`) and augmented views
(:mod:`.views`)."""

__all__: list[str] = []
