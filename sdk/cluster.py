"""Joining a Ray cluster for the offline jobs that scale out (the ``scale`` extra).

::

    ray = require_ray("10.0.0.5:6379", timeout=5.0)   # before any work: installed, reachable
    ...                                                # (open outputs, list inputs)
    with connected(ray, "10.0.0.5:6379"):
        ...                                            # ray.data pipelines

Used by the catalog build on Ray (:mod:`edgerec.sdk.catalog.ray_build`) and the export's
teacher cache on Ray (``edgerec.export.distill.cache_ray``). Ray is imported here and only
here, and only when a job starts: nothing on the device imports this module.

Addresses: ``None`` starts a local Ray for the job (or joins the one this process already
started); ``"local"`` likewise starts a new local one; ``"auto"`` joins the cluster that
``ray start`` runs on this machine; ``HOST:PORT`` (the head's GCS) or ``ray://HOST:10001``
(Ray Client) joins that cluster, and is checked to accept a TCP connection first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from edgerec.sdk.errors import RayUnavailableError

__all__ = ["INSTALL_HINT", "RayJobOptions", "check_reachable", "connected", "import_ray",
           "require_ray"]

INSTALL_HINT = "pip install 'edgerec[scale]'"


@dataclass(frozen=True)
class RayJobOptions:
    """Where and how wide a job runs on Ray (the options every Ray job here shares).

    Attributes:
        address: a running cluster (``HOST:PORT`` of the head's GCS, ``auto``, or
            ``ray://HOST:10001``); None starts a local Ray for the job (or joins the one
            this process already started).
        workers: actors (a fixed-size ``ray.data.ActorPoolStrategy``; Ray Data restarts a
            dead actor and retries its batch).
        batch_size: items per actor call (each job says what else a batch is).
        cpus_per_worker: CPUs Ray reserves for each actor; also its engine's threads unless
            the job's own options set them.
        connect_timeout_s: how long to wait for ``address`` to accept a connection.

    Raises:
        ValueError: workers or batch_size < 1, or cpus_per_worker <= 0 (a job may raise its
            own subclass, see :meth:`invalid`).
    """

    address: Optional[str] = None
    workers: int = 2
    batch_size: int = 64
    cpus_per_worker: float = 1.0
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or not self.cpus_per_worker > 0:
            raise self.invalid(
                "Ray workers and batch_size must be >= 1 and cpus_per_worker > 0, got "
                f"{self.workers}, {self.batch_size}, {self.cpus_per_worker}")

    @classmethod
    def invalid(cls, message: str) -> Exception:
        """The error for options out of range (a ``ValueError``; jobs narrow it)."""
        return ValueError(message)


def import_ray() -> Any:
    """The ``ray`` module (with ``ray.data`` loaded).

    Raises:
        RayUnavailableError: Ray is not installed; the message names the extra to install.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            f"Ray is not installed ({exc}); install the scale extra: {INSTALL_HINT}"
        ) from exc
    return ray


def check_reachable(address: str, timeout: float) -> None:
    """Fail when ``HOST:PORT`` (or ``ray://HOST:PORT``) does not accept a TCP connection
    within ``timeout`` seconds; ``auto`` and ``local`` are left to Ray.

    Raises:
        RayUnavailableError: the address is malformed or nothing answers there.
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailableError(f"the Ray address {address!r} is not HOST:PORT (or auto, or "
                                  "ray://HOST:PORT); pass the head node's address")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start "
            "--head` on the head node, or check the address and the firewall. Nothing was "
            "written."
        ) from exc


def require_ray(address: Optional[str], timeout: float) -> Any:
    """:func:`import_ray`, then :func:`check_reachable` for an explicit ``address``: the check
    a job makes before any work."""
    ray = import_ray()
    if address is not None:
        check_reachable(address, timeout)
    return ray


@contextmanager
def connected(ray: Any, address: Optional[str]) -> Iterator[Any]:
    """Join (or start, for ``None`` or ``"local"``) Ray for the ``with`` block; a Ray that this
    call started is shut down at its end, one that was already running is left running."""
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
