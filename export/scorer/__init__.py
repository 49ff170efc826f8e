"""The personalised scorer: training data (:mod:`.data`), training (:mod:`.train`), its bundle
files and gates (:mod:`.artifacts`) and the library entries (:mod:`.bundle`)."""

__all__: list[str] = []
