"""One way for every entry point (index, serve, query, eval) to start or join Ray.

- An address (``--ray-address``, else ``$RAY_ADDRESS`` as ``ray job submit`` sets it): join that
  cluster; its operator chose how it listens.
- Otherwise a local Ray that listens on 127.0.0.1 only, with no dashboard (or one on 127.0.0.1).
  Ray has no authentication by default, so anyone who reaches its ports can run code as this user
  (CVE-2023-48022); Ray binds every interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` was
  set *before Ray was first imported*. This module sets it for Ray's own processes and passes the
  loopback node address explicitly, so it holds whatever imported ``ray`` first.
- A local Ray is stopped with the run: on return, on an exception, and by a small reaper process
  (``reaper.py``) when the driver is killed (SIGKILL leaves no chance to clean up).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a cluster to join; None: $RAY_ADDRESS, else a local Ray on 127.0.0.1
    num_cpus: int | None = None  # local Ray only
    num_gpus: int | None = None  # local Ray only (declared; fake ones work for testing)
    object_store_memory: int | None = None  # local Ray only, bytes
    dashboard: bool = False  # local Ray only: the dashboard, on 127.0.0.1
    log_to_driver: bool = True
    env: tuple[tuple[str, str], ...] = ()  # local Ray only: environment of Ray's own processes (set if unset)


@dataclass
class RaySession:
    """What :func:`start_ray` did; ``close()`` stops a Ray it started (and its reaper)."""

    address: str  # "existing" (already initialised), "local", or the joined address
    started: bool  # True: this process started or joined Ray and will shut it down
    reaper: subprocess.Popen | None = None

    def close(self) -> None:
        if not self.started:
            return
        import ray

        try:
            ray.shutdown()
        finally:
            self.started = False
            if self.reaper is not None and self.reaper.poll() is None:
                self.reaper.send_signal(signal.SIGTERM)  # reap what shutdown left, then exit
                try:
                    self.reaper.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.reaper.kill()

    def __enter__(self) -> "RaySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cluster_address(options: RayOptions) -> str | None:
    """The cluster to join, or None for a local Ray (pure: reads only the environment)."""
    return options.address or os.environ.get("RAY_ADDRESS") or None


def start_ray(options: RayOptions = RayOptions()) -> RaySession:
    """Join the configured cluster or start a loopback-only local Ray; no-op if Ray is initialised."""
    address = cluster_address(options)
    if not address:
        os.environ[LOOPBACK_VAR] = "0"  # before `import ray` here; inherited by every Ray process started below
    import ray

    if ray.is_initialized():
        return RaySession("existing", started=False)
    if address:
        ray.init(address=address, log_to_driver=options.log_to_driver)
        return RaySession(address, started=True)
    _loopback_after_import()
    for k, v in options.env:  # Ray's processes inherit the driver's environment
        os.environ.setdefault(k, v)
    kwargs = {k: v for k, v in {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus,
                                "object_store_memory": options.object_store_memory}.items() if v is not None}
    session = RaySession("local", started=True, reaper=_start_reaper())  # first: it records Ray's processes as they start
    try:
        # address="local": never attach by accident to another cluster started with `ray start` on this host.
        ray.init(address="local", include_dashboard=options.dashboard, dashboard_host=LOOPBACK,
                 log_to_driver=options.log_to_driver, **kwargs)
    except BaseException:
        session.close()
        raise
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # never leave a reachable, unauthenticated Ray running
        session.close()
        raise RuntimeError(f"the local Ray came up on {node_ip}, not {LOOPBACK}; stopped it")
    return session


def _loopback_after_import() -> None:
    """Ray reads the variable once, when first imported: if something imported it earlier, apply the
    same switch to the module constant it set (the only place Ray reads it, ``services.get_node_ip_address``)."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        ray_constants.ENABLE_RAY_CLUSTER = False


def _start_reaper() -> subprocess.Popen | None:
    """A watcher that stops this process's Ray processes if this process dies without doing so."""
    try:
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("reaper.py")), str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:  # Ray still works; only a killed driver would leave it running
        log.warning("could not start the Ray reaper (%s): a killed run would leave its local Ray running", e)
        return None
