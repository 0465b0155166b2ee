"""Joining or starting a Ray cluster, one way for every Ray job lookalike runs (embed, predict, knn, ood).

A cluster lookalike starts itself listens on loopback only (Ray has no authentication and its job API runs
submitted code); joining a remote cluster (`--address`) is the user's explicit choice.
"""

from __future__ import annotations

import contextlib
import os

from ..errors import LookalikeError


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise LookalikeError("the Ray backend needs `pip install 'lookalike[distributed]'`") from exc
    return ray


LOCAL_ADDRESSES = (None, "local", "none")
# Ray's own switch for "this node serves only itself": its servers then bind 127.0.0.1 (read by ray at import and
# by the processes it starts, so both the environment and the imported constant are set while the node starts)
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only():
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(_LOCAL_ONLY_ENV), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = old_env
        ray_constants.ENABLE_RAY_CLUSTER = old_flag


def init_ray(address: str | None = None, *, ray_module=None, **kwargs) -> None:
    """Start a local Ray that listens on loopback only, dashboard off, or join the cluster at `address`.

    Ray has no authentication and its job API runs submitted code, so a cluster lookalike starts must not be
    reachable from the network: every server of the local node binds 127.0.0.1, and the start is checked (the
    cluster's address must be a loopback one, else it is shut down and refused). Joining a remote cluster
    (`address`) is the user's choice; securing that cluster is the user's (README, "Ray")."""
    ray = ray_module or _import_ray()
    kwargs = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False, **kwargs}
    if address not in LOCAL_ADDRESSES:
        _reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, OSError) as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:200]
            raise LookalikeError(f"--address {address}: no Ray cluster there ({first}); start one (`ray start "
                                 "--head`) or check the address") from exc
        return
    with _loopback_only():
        ray.init(address=None, **kwargs)
    gcs = ray.get_runtime_context().gcs_address or ""
    if not gcs.startswith(("127.", "[::1]", "localhost")):
        ray.shutdown()
        raise LookalikeError(f"the local Ray started at {gcs}, not on loopback; lookalike starts no cluster the "
                             "network can reach: start one yourself (`ray start --head --node-ip-address "
                             "127.0.0.1`) and pass --address")


def _reachable(address: str, timeout: float = 5.0) -> None:
    """LookalikeError in one line when HOST:PORT (or ray://HOST:PORT) takes no connection within `timeout` s:
    Ray itself retries an unreachable address for minutes, printing raw warnings. `auto` is left to Ray."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise LookalikeError(f"--address {address}: cannot reach a Ray cluster there ({exc.strerror or exc}); "
                             "start it (`ray start --head`) or check the address") from exc


def _connect(ray, address: str | None, ray_init: dict | None) -> bool:
    """Join (or start, loopback only) Ray unless already connected; True when this call started it (and must shut
    it down)."""
    if ray.is_initialized():
        return False
    init_ray(address, ray_module=ray, **(ray_init or {}))
    return True


