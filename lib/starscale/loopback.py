"""Keep Horovod's own servers on one address (127.0.0.1 on the loopback test cluster).

Horovod 0.28.1 binds its driver service, the task services and the Gloo rendezvous HTTP server
to every interface (``('', port)`` in ``horovod.runner.util.network.find_port``) and offers no
setting for it; ``horovod.spark.run(nics=...)`` only chooses which addresses the ranks *use*.
``pin_horovod_services(host)`` swaps that port finder for one that binds ``host`` only.

It must run in every process that starts one of those servers:
- the Spark driver, before ``horovod.spark.run`` (driver service, rendezvous server);
- each executor's Python worker, which runs Horovod's task service. Spark starts those through
  its daemon module, so ``spark.python.daemon.module=starscale.worker`` (the default in local
  mode, set by spark.build_session; conf/standalone.yaml sets it for the test cluster) makes
  every executor Python apply the pin from ``$STARSCALE_HOROVOD_BIND`` (set through
  ``spark.executorEnv.STARSCALE_HOROVOD_BIND``) and then run pyspark's own daemon.
"""
from __future__ import annotations

import random

BIND_ENV = "STARSCALE_HOROVOD_BIND"


def _port_finder(host: str):
    def find_port(server_factory):
        """Horovod's find_port, binding `host` instead of every interface."""
        start = random.randrange(1024, 65536)
        for offset in range(65536 - 1024):
            port = 1024 + (start - 1024 + offset) % (65536 - 1024)
            try:
                return server_factory((host, port)), port
            except OSError:
                continue
        raise RuntimeError(f"no free port on {host} for a Horovod service")
    find_port.starscale_host = host
    return find_port


def resolve_host(value: str) -> str:
    """An address as given, or `iface:NAME` → this host's IPv4 address on interface NAME (one
    setting for every node of a real cluster, whose private addresses differ)."""
    if not value.startswith("iface:"):
        return value
    import socket
    import psutil
    name = value.split(":", 1)[1]
    for addr in psutil.net_if_addrs().get(name, []):
        if addr.family == socket.AF_INET:
            return addr.address
    raise ValueError(f"{BIND_ENV} / train.bind_host {value!r}: no IPv4 address on interface {name!r}")


def pin_horovod_services(host: str) -> None:
    """Make every Horovod service started from now on in this process listen on `host` only
    (an address, or iface:NAME for this host's address on that interface)."""
    host = resolve_host(host)
    import horovod.runner.common.util.network as common_network
    import horovod.runner.http.http_server as http_server
    import horovod.runner.util.network as util_network
    finder = _port_finder(host)
    # Each module imported the function by name: replace the name where it is looked up.
    for module in (util_network, common_network, http_server):
        module.find_port = finder


def pinned_host() -> str | None:
    """The host Horovod services bind in this process, or None when not pinned."""
    import horovod.runner.common.util.network as common_network
    return getattr(common_network.find_port, "starscale_host", None)
