"""Keep Horovod's own servers on one address (127.0.0.1 on the loopback test cluster).

Horovod 0.28.1 binds its driver service, the task services and the Gloo rendezvous HTTP server
to every interface (``('', port)`` in ``horovod.runner.util.network.find_port``) and offers no
setting for it; ``horovod.spark.run(nics=...)`` only chooses which addresses the ranks *use*.
``pin_horovod_services(host)`` swaps that port finder for one that binds ``host`` only, makes
a service advertise only that address (Horovod lists every interface's address and its peers
probe them all), and makes the process's clients reach services on this host through ``host``
(Horovod's driver checks that a task connects from an address it declared).

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


def _only(addresses: dict, host: str) -> dict:
    """Horovod's {interface: [(address, port)]} cut to `host`'s entries; unchanged when it has
    none (a peer on another machine)."""
    kept = {intf: [a for a in addrs if a[0] == host] for intf, addrs in addresses.items()}
    return {intf: addrs for intf, addrs in kept.items() if addrs} or addresses


def _advertised(original, host: str):
    def get_local_addresses(service):
        """A service offers its peers only the address it listens on: they then never probe
        an interface it does not answer on."""
        return _only(original(service), host)
    get_local_addresses.starscale_original = original
    return get_local_addresses


def _probed(original, host: str):
    def probe(client, addresses):
        """A client reaches a service on this host through `host` only, so the connection
        comes from `host`: Horovod's driver refuses a task whose connection comes from an
        address the task did not declare ('has connected from a different address')."""
        return original(client, _only(addresses, host))
    probe.starscale_original = original
    return probe


def pin_horovod_services(host: str) -> None:
    """Make every Horovod service started from now on in this process listen on `host` only
    (an address, or iface:NAME for this host's address on that interface) and offer only that
    address to its peers; its clients reach this host's services through that address."""
    host = resolve_host(host)
    import horovod.runner.common.util.network as common_network
    import horovod.runner.http.http_server as http_server
    import horovod.runner.util.network as util_network
    finder = _port_finder(host)
    # Each module imported the function by name: replace the name where it is looked up.
    for module in (util_network, common_network, http_server):
        module.find_port = finder
    for cls, name, wrap in ((common_network.BasicService, "_get_local_addresses", _advertised),
                            (common_network.BasicClient, "_probe", _probed)):
        current = getattr(cls, name)
        setattr(cls, name, wrap(getattr(current, "starscale_original", current), host))


def pinned_host() -> str | None:
    """The host Horovod services bind in this process, or None when not pinned."""
    import horovod.runner.common.util.network as common_network
    return getattr(common_network.find_port, "starscale_host", None)
