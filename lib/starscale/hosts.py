"""A Spark standalone cluster of separate hosts on this one machine (make cluster-up HOSTS=N).

`python -m starscale.hosts up|down|status [--conf FILE] [--set KEY=VALUE]`. Needs root (Linux
network and mount namespaces) and iproute2's `ip`, util-linux's `unshare`.

The hosts, with prefix P (cluster.prefix) on the private /24 A.B.C.0 (cluster.subnet):

- the driver's host is this machine (root namespace): a bridge named NIC = "<P>0" holds A.B.C.1;
- host "master" (network namespace P-master, A.B.C.2) runs the Spark master;
- hosts "w1".."w<N-1>" (P-w1, A.B.C.11, ...) run one Spark worker each.

Every host's end of its veth pair is named NIC too, so Horovod's `nics` ([NIC]) names an
interface every host has. Each host process also gets its own UTS namespace (hostname P-name)
and mount namespace, in which the driver's checkout and venvs are hidden under empty tmpfs: a
worker host has what a node image has (Java, the base Python, a Spark distribution at
<hosts_dir>/image/spark, read-only) and gets TensorFlow, Horovod and starscale only from what
spark-submit ships (--archives, --py-files). <hosts_dir>/shared stands in for the cluster's
shared storage (HDFS, NFS): the same path on every host. Each host keeps its own files under
<hosts_dir>/hosts/<name> (work dirs, local dirs, logs).

Worker hosts offer cluster.gpus_per_host fake GPUs through a discovery script printing Spark's
documented JSON ({"name": "gpu", "addresses": [...]}), for drilling GPU scheduling on CPUs.

`up` writes the cluster's secret (spark.authenticate) into <hosts_dir>/conf/spark-defaults.conf
(0600) and the driver's overlay <hosts_dir>/conf/hosts.yaml (plus hosts-gpus.yaml, to follow
conf/gpu.yaml, when the hosts have fake GPUs); submit with SPARK_CONF_DIR=<hosts_dir>/conf and
--conf <hosts_dir>/conf/hosts.yaml. `down` kills every
process in the cluster's namespaces and removes every namespace, veth and bridge named with
the prefix, with or without the state `up` left (also after a killed run).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from starscale import cluster
from starscale.config import ClusterConfig

MASTER = "master"
MASTER_PORT = 7077
STATE_FILE = "hosts.json"
OVERLAY_FILE = "hosts.yaml"
GPU_OVERLAY_FILE = "hosts-gpus.yaml"
DEFAULTS_FILE = "spark-defaults.conf"


@dataclass(frozen=True)
class Host:
    name: str                 # master | w1 | w2 ...
    netns: str                # P-name
    address: str              # A.B.C.x

    @property
    def hostname(self) -> str:
        return self.netns


def nic(cfg: ClusterConfig) -> str:
    """The interface name every host (and the driver's bridge) has on the cluster's /24."""
    return f"{cfg.prefix}0"


def plan(cfg: ClusterConfig) -> tuple[str, list[Host]]:
    """(the driver's address, [master, w1, ...]) for cfg.hosts hosts on cfg.subnet."""
    if cfg.hosts < 3:
        raise ValueError(f"cluster.hosts: {cfg.hosts}; a multi-host cluster needs >= 3 "
                         f"(a master and at least two worker hosts)")
    net = ipaddress.ip_network(cfg.subnet)
    base = int(net.network_address)
    workers = [Host(f"w{i}", f"{cfg.prefix}-w{i}", str(ipaddress.ip_address(base + 10 + i)))
               for i in range(1, cfg.hosts)]
    master = Host(MASTER, f"{cfg.prefix}-{MASTER}", str(ipaddress.ip_address(base + 2)))
    return str(ipaddress.ip_address(base + 1)), [master, *workers]


def master_url(cfg: ClusterConfig) -> str:
    return f"spark://{plan(cfg)[1][0].address}:{MASTER_PORT}"


def checkout_paths() -> list[Path]:
    """What a worker host must not see: the driver's checkout (venvs inside it too) and the
    driver's venv when it lives elsewhere."""
    import starscale
    paths = []
    lib = Path(starscale.__file__).resolve().parent.parent
    repo = lib.parent if (lib.parent / "setup.py").exists() else lib
    paths.append(repo)
    prefix = Path(sys.prefix).resolve()
    if prefix != Path(sys.base_prefix).resolve() and not _under(prefix, repo):
        paths.append(prefix)
    return paths


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def check_prerequisites(cfg: ClusterConfig) -> None:
    """One clear error before anything is made: root, the tools, a free private /24, the hosts
    folder outside the checkout."""
    if os.geteuid() != 0:
        raise RuntimeError("a multi-host cluster needs root (network and mount namespaces)")
    for tool in ("ip", "unshare", "java"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found on PATH (iproute2, util-linux, a JDK 17)")
    net = ipaddress.ip_network(cfg.subnet, strict=True)
    if net.prefixlen != 24 or not net.is_private:
        raise ValueError(f"cluster.subnet: {cfg.subnet} must be a private /24")
    used = _run("ip", "-o", "-4", "addr", "show").stdout
    for line in used.splitlines():
        parts = line.split()
        addr = parts[3] if len(parts) > 3 else ""
        if addr and ipaddress.ip_interface(addr).ip in net and parts[1] != nic(cfg):
            raise ValueError(f"cluster.subnet: {cfg.subnet} is in use on this machine "
                             f"({parts[1]} {addr}); choose another private /24")
    hosts_dir = Path(cfg.hosts_dir).resolve()
    for hidden in checkout_paths():
        if _under(hosts_dir, hidden):
            raise ValueError(f"cluster.hosts_dir: {hosts_dir} is inside {hidden}, which worker "
                             f"hosts do not see; choose a folder outside it")
    base = Path(sys.base_prefix).resolve()
    if any(_under(base, hidden) for hidden in checkout_paths()):
        raise ValueError(f"the base Python {base} lies inside the checkout: worker hosts would "
                         f"not have it")


# --------------------------------------------------------------------------- network
def _make_network(cfg: ClusterConfig, driver_ip: str, hosts: list[Host]) -> None:
    bridge = nic(cfg)
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{driver_ip}/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    for host in hosts:
        _run("ip", "netns", "add", host.netns)
        # the host's end is named like the bridge (same name on every host: Horovod's nics);
        # this machine's end is named for the host
        _run("ip", "link", "add", host.netns, "type", "veth", "peer", "name", bridge,
             "netns", host.netns)
        _run("ip", "link", "set", host.netns, "master", bridge, "up")
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", bridge)
        _run("ip", "-n", host.netns, "link", "set", bridge, "up")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")


def namespaces(prefix: str) -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(f"{prefix}-"))


def _links(prefix: str) -> list[str]:
    out = _run("ip", "-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name == f"{prefix}0" or name.startswith(f"{prefix}-"):
                names.append(name)
    return names


# --------------------------------------------------------------------------- processes
def _host_dir(hosts_dir: Path, host: Host) -> Path:
    return hosts_dir / "hosts" / host.name


def _host_script(host: Host, hidden: list[Path], spark_src: Path, image_spark: Path,
                 command: list[str], env: dict[str, str]) -> str:
    """The shell that becomes one host: its hostname, the node image's Spark mounted read-only,
    the driver's checkout and venvs hidden, then the Spark daemon with a clean environment."""
    import shlex
    hosts_file = image_spark.parent / "hosts"
    lines = ["set -e", f"hostname {shlex.quote(host.hostname)}",
             # name resolution as a cluster's DNS gives it (Gloo looks up its own host name)
             f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts",
             f"mount --bind {shlex.quote(str(spark_src))} {shlex.quote(str(image_spark))}",
             f"mount -o remount,bind,ro {shlex.quote(str(image_spark))}"]
    for path in hidden:
        lines.append(f"mount -t tmpfs -o size=1m,mode=0755 starscale-hidden {shlex.quote(str(path))}")
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    lines.append(f"exec env -i {env_args} {' '.join(shlex.quote(c) for c in command)}")
    return "\n".join(lines)


def hosts_file_text(driver_ip: str, hosts: list[Host]) -> str:
    """/etc/hosts of every host: loopback, the driver and each host by its host name."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
             f"{driver_ip} {hosts[0].netns.rsplit('-', 1)[0]}-driver"]
    lines += [f"{h.address} {h.hostname}" for h in hosts]
    return "\n".join(lines) + "\n"


def _spawn(host: Host, script: str, log: Path) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts",
             "--propagation", "private", "/bin/sh", "-c", script],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    return proc.pid


def _java_home() -> str:
    java = Path(shutil.which("java") or "java").resolve()
    return str(java.parent.parent)


def _daemon_env(host: Host, image_spark: Path, host_dir: Path) -> dict[str, str]:
    """A host's daemon starts from a clean environment: only these, plus the caller's
    SPARK_DAEMON_JAVA_OPTS (the JVM options sbin/start-*.sh would pass on)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(host_dir), "JAVA_HOME": _java_home(), "SPARK_HOME": str(image_spark),
           "SPARK_LOCAL_IP": host.address, "SPARK_LOG_DIR": str(host_dir / "logs"),
           "SPARK_LOCAL_DIRS": str(host_dir / "local"), "SPARK_NO_DAEMONIZE": "1",
           "SPARK_CONF_DIR": str(host_dir / "conf"), "TMPDIR": str(host_dir / "tmp")}
    if os.environ.get("SPARK_DAEMON_JAVA_OPTS"):
        env["SPARK_DAEMON_JAVA_OPTS"] = os.environ["SPARK_DAEMON_JAVA_OPTS"]
    return env


def gpu_script(hosts_dir: Path, count: int) -> Path:
    """The fake GPUs' discovery script (Spark's JSON: {"name": "gpu", "addresses": [...]})."""
    path = hosts_dir / "image" / "fake-gpus.sh"
    addresses = json.dumps([str(i) for i in range(count)])
    path.write_text(f"#!/bin/sh\necho '{{\"name\": \"gpu\", \"addresses\": {addresses}}}'\n")
    path.chmod(0o755)
    return path


def _write_host_conf(host_dir: Path, secret_lines: str, gpus: int, script: Path | None) -> Path:
    conf = host_dir / "conf"
    conf.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = conf / DEFAULTS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret_lines)
        if gpus and script is not None:
            fh.write(f"spark.worker.resource.gpu.amount {gpus}\n"
                     f"spark.worker.resource.gpu.discoveryScript {script}\n")
    return path


def _start_host(cfg: ClusterConfig, hosts_dir: Path, host: Host, master: str,
                secret_lines: str) -> int:
    host_dir = _host_dir(hosts_dir, host)
    for sub in ("logs", "local", "work", "tmp"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    image_spark = hosts_dir / "image" / "spark"
    gpus = cfg.gpus_per_host if host.name != MASTER else 0
    script = gpu_script(hosts_dir, gpus) if gpus else None
    props = _write_host_conf(host_dir, secret_lines, gpus, script)
    spark_class = str(image_spark / "bin" / "spark-class")
    if host.name == MASTER:
        command = [spark_class, "org.apache.spark.deploy.master.Master", "--host", host.address,
                   "--port", str(MASTER_PORT), "--webui-port", "8080",
                   "--properties-file", str(props)]
    else:
        command = [spark_class, "org.apache.spark.deploy.worker.Worker", master,
                   "--host", host.address, "--cores", str(cfg.worker_cores),
                   "--memory", cfg.worker_memory, "--webui-port", "8081",
                   "--work-dir", str(host_dir / "work"), "--properties-file", str(props)]
    script_text = _host_script(host, checkout_paths(), cluster.spark_home(), image_spark, command,
                               _daemon_env(host, image_spark, host_dir))
    return _spawn(host, script_text, host_dir / "logs" / f"{host.name}.log")


def _master_up(log: Path) -> bool:
    return log.exists() and b"I have been elected leader" in log.read_bytes()


def _write_overlay(cfg: ClusterConfig, hosts_dir: Path, driver_ip: str) -> Path:
    """The driver's overlay: where the shared storage is, the driver's address on the cluster's
    /24, Horovod's interface and the fake GPUs' script for executors."""
    import yaml
    conf = {"spark.driver.host": driver_ip, "spark.driver.bindAddress": driver_ip,
            "spark.ui.enabled": "false"}
    overlay = {"run": {"output_dir": str(hosts_dir / "shared" / "out")},
               "spark": {"conf": conf},
               "train": {"nics": [nic(cfg)], "bind_host": f"iface:{nic(cfg)}"}}
    path = hosts_dir / "conf" / OVERLAY_FILE
    path.write_text("# written by `starscale.hosts up`: the driver's side of this cluster\n"
                    + yaml.safe_dump(overlay, sort_keys=False))
    if cfg.gpus_per_host:
        # after conf/gpu.yaml only (any spark.executor.resource.gpu.* key makes Spark ask for
        # a GPU amount): its discovery script (nvidia-smi) → the fake GPUs' script
        gpus = {"spark": {"conf": {"spark.executor.resource.gpu.discoveryScript":
                                   str(hosts_dir / "image" / "fake-gpus.sh")}}}
        (hosts_dir / "conf" / GPU_OVERLAY_FILE).write_text(
            "# written by `starscale.hosts up`: after conf/gpu.yaml, the fake GPUs\n"
            + yaml.safe_dump(gpus, sort_keys=False))
    return path


def up(cfg: ClusterConfig) -> str:
    """Make the hosts, start the master and one worker per worker host; the master URL."""
    check_prerequisites(cfg)
    hosts_dir = Path(cfg.hosts_dir).resolve()
    if namespaces(cfg.prefix) or _links(cfg.prefix):
        raise RuntimeError(f"hosts with prefix {cfg.prefix!r} exist already "
                           f"({', '.join(namespaces(cfg.prefix) + _links(cfg.prefix))}); "
                           f"make cluster-down first")
    driver_ip, hosts = plan(cfg)
    for sub in ("conf", "shared", "image/spark", "hosts"):
        (hosts_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(hosts_dir / "conf", 0o700)
    (hosts_dir / "image" / "hosts").write_text(hosts_file_text(driver_ip, hosts))
    secret = cluster.write_auth_file(hosts_dir)          # <hosts_dir>/conf/spark-defaults.conf
    secret_lines = secret.read_text()
    state = {"prefix": cfg.prefix, "subnet": cfg.subnet, "driver": driver_ip,
             "hosts": {h.name: {"netns": h.netns, "address": h.address} for h in hosts},
             "pids": {}}
    try:
        _make_network(cfg, driver_ip, hosts)
        url = f"spark://{hosts[0].address}:{MASTER_PORT}"
        state["pids"][MASTER] = _start_host(cfg, hosts_dir, hosts[0], url, secret_lines)
        _save_state(hosts_dir, state)
        master_log = _host_dir(hosts_dir, hosts[0]) / "logs" / f"{MASTER}.log"
        cluster.wait_for(lambda: _master_up(master_log), cfg.start_timeout_s, "master", master_log)
        for host in hosts[1:]:
            state["pids"][host.name] = _start_host(cfg, hosts_dir, host, url, secret_lines)
        _save_state(hosts_dir, state)
        for host in hosts[1:]:
            log = _host_dir(hosts_dir, host) / "logs" / f"{host.name}.log"
            cluster.wait_for(lambda: cluster.registered(log), cfg.start_timeout_s,
                             f"worker host {host.name}", log)
        _write_overlay(cfg, hosts_dir, driver_ip)
    except BaseException:
        down(cfg)
        raise
    return url


def _save_state(hosts_dir: Path, state: dict) -> None:
    (hosts_dir / "conf" / STATE_FILE).write_text(json.dumps(state, indent=1))


def host_pids(netns: str) -> list[int]:
    """Every process in network namespace netns."""
    out = _run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_host(cfg: ClusterConfig, name: str) -> list[int]:
    """SIGKILL every process of host `name` (a lost machine); its network stays."""
    netns = f"{cfg.prefix}-{name}"
    pids = host_pids(netns)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def start_worker_host(cfg: ClusterConfig, name: str) -> int:
    """(Re)start the worker of host `name` after kill_host; waits for its registration."""
    hosts_dir = Path(cfg.hosts_dir).resolve()
    _, hosts = plan(cfg)
    host = next(h for h in hosts if h.name == name)
    log = _host_dir(hosts_dir, host) / "logs" / f"{host.name}.log"
    offset = log.stat().st_size if log.exists() else 0
    secret_lines = (hosts_dir / "conf" / DEFAULTS_FILE).read_text()
    pid = _start_host(cfg, hosts_dir, host, master_url(cfg), secret_lines)
    cluster.wait_for(lambda: cluster.registered(log, offset), cfg.start_timeout_s,
                     f"worker host {name}", log)
    return pid


def down(cfg: ClusterConfig, timeout_s: float = 20) -> list[str]:
    """Kill every process in the prefix's namespaces, then delete the namespaces, the veths and
    the bridge; remove the secret. Works from the names alone (a killed `up` or test)."""
    names = namespaces(cfg.prefix)
    pids = [p for ns in names for p in host_pids(ns)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(host_pids(ns) for ns in names):
        time.sleep(0.3)
    for ns in names:
        for pid in host_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in names:
        _run("ip", "netns", "delete", ns, check=False)
    for link in _links(cfg.prefix):
        _run("ip", "link", "delete", link, check=False)
    hosts_dir = Path(cfg.hosts_dir).resolve()
    secret = hosts_dir / "conf" / DEFAULTS_FILE
    if secret.exists():
        secret.unlink()
    for props in (hosts_dir / "hosts").glob(f"*/conf/{DEFAULTS_FILE}") if (hosts_dir / "hosts").exists() else []:
        props.unlink()
    left = namespaces(cfg.prefix) + _links(cfg.prefix)
    if left:
        raise RuntimeError(f"cluster-down: could not remove {', '.join(left)}")
    return names


def status(cfg: ClusterConfig) -> dict[str, list[int]]:
    return {ns: host_pids(ns) for ns in namespaces(cfg.prefix)}


def main(argv: list[str] | None = None) -> None:
    action, cfg = cluster.parse_cli("python -m starscale.hosts", argv)
    try:
        if action == "up":
            url = up(cfg)
            conf_dir = Path(cfg.hosts_dir).resolve() / "conf"
            print(f"cluster up: {url}, {cfg.hosts - 1} worker hosts on {cfg.subnet} "
                  f"(interface {nic(cfg)}); submit with SPARK_CONF_DIR={conf_dir} and "
                  f"--conf {conf_dir / OVERLAY_FILE}")
        elif action == "down":
            stopped = down(cfg)
            print(f"cluster down: removed {', '.join(stopped) or 'nothing (none up)'}")
        else:
            print("\n".join(f"{ns}: pids {pids}" for ns, pids in status(cfg).items())
                  or "not running")
    except (ValueError, RuntimeError) as exc:
        cluster.cli_error(action, exc)


if __name__ == "__main__":
    main()
