"""A Spark standalone cluster on loopback, started from the installed pyspark distribution.

`python -m starscale.cluster up|down|status [--conf FILE] [--set KEY=VALUE]` (make cluster-up /
cluster-down). One master and `cluster.workers` workers, each a JVM started with pyspark's
`bin/spark-class`, bound to 127.0.0.1, logs and pid files under `cluster.run_dir`. `down` stops
only the processes whose pids `up` recorded, and only if they are still the JVMs it started.

Authentication: `up` writes a new random secret for this cluster into
``<run_dir>/conf/spark-defaults.conf`` (folder 0700, file 0600: `spark.authenticate true` + the
secret), and master and workers read it with ``--properties-file`` (the secret is never in a
command line, which any local user can read in `ps`). Jobs use the same file: with
``SPARK_CONF_DIR=<run_dir>/conf`` spark-submit (and pyspark) read it as their defaults, e.g.
``SPARK_CONF_DIR=out/cluster/conf make full-data-train SPARK_MASTER=spark://127.0.0.1:7077 ...``,
or pass ``--properties-file <file>``; a job without it is refused. `down` deletes it.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from starscale.config import ClusterConfig, load_config


def spark_home() -> Path:
    """The Spark distribution pyspark ships (bin/, jars/): what the daemons run from."""
    import pyspark
    return Path(pyspark.__file__).resolve().parent


def master_url(cfg: ClusterConfig) -> str:
    return f"spark://{cfg.host}:{cfg.master_port}"


def _env(cfg: ClusterConfig, run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": cfg.host,          # every listener on loopback only
        "SPARK_MASTER_HOST": cfg.host,
        "SPARK_LOG_DIR": str(run_dir / "logs"),
        "SPARK_WORKER_DIR": str(run_dir / "work"),
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
    })
    return env


AUTH_FILE = "spark-defaults.conf"      # in <run_dir>/conf: SPARK_CONF_DIR for the jobs


def auth_file(run_dir: str | Path) -> Path:
    """The cluster's Spark properties file holding its authentication secret."""
    return Path(run_dir).resolve() / "conf" / AUTH_FILE


def write_auth_file(run_dir: Path) -> Path:
    """A fresh secret for this cluster in a 0600 properties file in a 0700 folder (created with
    those modes: never readable by others, not even for an instant)."""
    path = auth_file(run_dir)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("spark.authenticate true\n"
                 f"spark.authenticate.secret {secrets.token_hex(32)}\n")
    return path


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _start(name: str, args: list[str], run_dir: Path, env: dict[str, str]) -> int:
    log = open(run_dir / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)     # survives the caller; stopped by pid
    (run_dir / "pids" / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_for(predicate, timeout_s: int, what: str, log: Path) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} not up after {timeout_s}s; log {log}:\n{tail}")


def up(cfg: ClusterConfig) -> str:
    """Start master + workers; return the master URL. Refuses when one is already running."""
    run_dir = Path(cfg.run_dir).resolve()
    for sub in ("logs", "pids", "work"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    if _running(run_dir):
        raise RuntimeError(f"a cluster started from {run_dir} is already running; cluster-down first")
    if _port_open(cfg.host, cfg.master_port):
        raise RuntimeError(f"port {cfg.host}:{cfg.master_port} is taken by another process "
                           f"(set cluster.master_port)")
    env = _env(cfg, run_dir)
    auth = write_auth_file(run_dir)
    _start("master", ["org.apache.spark.deploy.master.Master", "--host", cfg.host,
                      "--port", str(cfg.master_port), "--webui-port", str(cfg.master_webui_port),
                      "--properties-file", str(auth)],
           run_dir, env)
    wait_for(lambda: _port_open(cfg.host, cfg.master_port), cfg.start_timeout_s, "master",
              run_dir / "logs" / "master.log")
    for i in range(cfg.workers):
        _start_worker(cfg, i, run_dir, env)
    for i in range(cfg.workers):
        _wait_registered(cfg, i, run_dir, 0)
    return master_url(cfg)


def _start_worker(cfg: ClusterConfig, index: int, run_dir: Path, env: dict[str, str]) -> int:
    return _start(f"worker-{index}", ["org.apache.spark.deploy.worker.Worker", master_url(cfg),
                                      "--host", cfg.host, "--cores", str(cfg.worker_cores),
                                      "--memory", cfg.worker_memory,
                                      "--webui-port", str(worker_webui_port(cfg, index)),
                                      "--work-dir", str(run_dir / "work" / f"worker-{index}"),
                                      "--properties-file", str(auth_file(run_dir))],
                  run_dir, env)


def registered(log: Path, offset: int = 0) -> bool:
    """Whether a worker's log says it registered with the master (after byte offset)."""
    return log.exists() and b"Successfully registered with master" in log.read_bytes()[offset:]


def _wait_registered(cfg: ClusterConfig, index: int, run_dir: Path, log_offset: int) -> None:
    """Wait for worker `index` to log its registration (after byte log_offset of its log)."""
    log = run_dir / "logs" / f"worker-{index}.log"
    wait_for(lambda: registered(log, log_offset), cfg.start_timeout_s, f"worker-{index}", log)


def start_worker(cfg: ClusterConfig, index: int) -> int:
    """(Re)start worker `index` of a running cluster (after kill_worker); returns its pid."""
    run_dir = Path(cfg.run_dir).resolve()
    if f"worker-{index}" in _running(run_dir):
        raise RuntimeError(f"worker-{index} of {run_dir} is already running")
    log = run_dir / "logs" / f"worker-{index}.log"
    offset = log.stat().st_size if log.exists() else 0
    pid = _start_worker(cfg, index, run_dir, _env(cfg, run_dir))
    _wait_registered(cfg, index, run_dir, offset)
    return pid


def free_port(host: str = "127.0.0.1", block: int = 1) -> int:
    """A port p on host with p .. p+block-1 all free right now (tests: a cluster per run)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port + block <= 65535 and not any(_port_open(host, port + i) for i in range(block)):
            return port
    raise RuntimeError(f"no block of {block} free ports on {host}")


def worker_webui_port(cfg: ClusterConfig, index: int) -> int:
    return cfg.master_webui_port + 1 + index


def get_json(url: str, timeout_s: float = 5.0):
    """GET url and decode its JSON body (the master, worker and driver UIs' status endpoints)."""
    import json
    import urllib.request
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read().decode("utf-8"))


def worker_state(cfg: ClusterConfig, index: int) -> dict:
    """One worker's JSON status; its "executors" list holds the running executors (appid, id)."""
    return get_json(f"http://{cfg.host}:{worker_webui_port(cfg, index)}/json/")


def running_executors(cfg: ClusterConfig, index: int) -> list[dict]:
    """Executors running on worker `index` now ([] when it has none or does not answer)."""
    try:
        return list(worker_state(cfg, index).get("executors") or [])
    except OSError:
        return []


def _is_our_jvm(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"org.apache.spark.deploy" in cmdline


def _running(run_dir: Path) -> dict[str, int]:
    out = {}
    for pid_file in sorted((run_dir / "pids").glob("*.pid")):
        pid = int(pid_file.read_text().strip() or 0)
        if pid and _is_our_jvm(pid):
            out[pid_file.stem] = pid
    return out


def kill_worker(run_dir: str, index: int) -> int:
    """SIGKILL one worker JVM (fault tests); returns its pid."""
    pid = _running(Path(run_dir).resolve())[f"worker-{index}"]
    os.kill(pid, signal.SIGKILL)
    return pid


def down(run_dir_str: str, timeout_s: int = 20) -> list[str]:
    """Stop what up() started (by recorded pid); return the names stopped."""
    run_dir = Path(run_dir_str).resolve()
    running = _running(run_dir)
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(_is_our_jvm(p) for p in running.values()):
        time.sleep(0.3)
    for pid in running.values():
        if _is_our_jvm(pid):
            os.kill(pid, signal.SIGKILL)
    for pid_file in (run_dir / "pids").glob("*.pid") if (run_dir / "pids").exists() else []:
        pid_file.unlink()
    if auth_file(run_dir).exists():
        auth_file(run_dir).unlink()          # the next cluster gets a new secret
    return sorted(running)


def parse_cli(prog: str, argv: list[str] | None) -> tuple[str, ClusterConfig]:
    """`prog up|down|status [--conf FILE] [--set KEY=VALUE]` → (action, the cluster section)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--conf", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    try:
        return args.action, load_config(args.conf, args.overrides).cluster
    except ValueError as exc:
        cli_error(args.action, exc)


def cli_error(action: str, exc: Exception) -> None:
    """One line on stderr, exit 1."""
    print(f"starscale cluster {action}: {exc}", file=sys.stderr)
    raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    action, cfg = parse_cli("python -m starscale.cluster", argv)
    try:
        if action == "up":
            print(f"cluster up: {up(cfg)} (logs and pids under {Path(cfg.run_dir).resolve()}); "
                  f"authentication on: submit with SPARK_CONF_DIR={auth_file(cfg.run_dir).parent}")
        elif action == "down":
            stopped = down(cfg.run_dir)
            print(f"cluster down: stopped {', '.join(stopped) or 'nothing (none running)'}")
        else:
            running = _running(Path(cfg.run_dir).resolve())
            print("\n".join(f"{name}: pid {pid}" for name, pid in running.items())
                  or "not running")
    except (ValueError, RuntimeError) as exc:
        cli_error(action, exc)


if __name__ == "__main__":
    main()
