"""``edgerec bench``: what the device's pipeline costs on this machine, and the device profile.

Modules:

- :mod:`.profile`: the device profile file that ``EncoderOptions(engine="auto",
  precision="auto")`` reads (re-exported here; imported by the encoder, so it stays small).
- :mod:`.machine`: machine facts, percentiles, peak RSS (``VmHWM``), git commit.
- :mod:`.worker`: one configuration measured inside one fresh process
  (``python -m edgerec.sdk.bench.worker``).
- :mod:`.runner`: the configurations, interleaved rounds of worker processes, ratios within
  a round; :func:`~.runner.run_bench` and :func:`~.runner.choose`.
- :mod:`.catalogs`: the synthetic catalogs that search is timed on.
- :mod:`.report`: JSON + Markdown (+ PNG when matplotlib is installed).

Nothing here imports torch; faiss-cpu (the ``bench`` extra) is used as a comparison when it is
importable and reported as absent otherwise.
"""

from edgerec.sdk.bench.profile import (
    PROFILE_ENV,
    PROFILE_FORMAT,
    DeviceProfile,
    Measurement,
    ProfileChoice,
    default_profile_path,
    machine_identity,
    read_device_profile,
    write_device_profile,
)

__all__ = [
    "PROFILE_ENV",
    "PROFILE_FORMAT",
    "DeviceProfile",
    "Measurement",
    "ProfileChoice",
    "default_profile_path",
    "machine_identity",
    "read_device_profile",
    "write_device_profile",
]
