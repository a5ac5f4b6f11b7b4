"""The Python daemon of Spark's workers: starscale's settings applied once, before pyspark's own
daemon forks the worker processes that run our UDFs and Horovod's task services.

``spark.python.daemon.module=starscale.worker`` (spark.build_session sets it in local mode,
conf/standalone.yaml on the test cluster) makes every executor Python:
- pin Horovod's services to ``$STARSCALE_HOROVOD_BIND`` (starscale.loopback);
- send Python warnings to ``$STARSCALE_WORKER_LOG`` (the run's log file, local mode) instead
  of the worker's stderr, which Spark copies to the JVM's stderr: the terminal in local mode.
The forked workers inherit both. The native libraries' log levels (TF_CPP_MIN_LOG_LEVEL, …)
reach the workers as ``spark.executorEnv`` settings (build_session), daemon or not.
"""
from __future__ import annotations

import logging
import os
import sys

LOG_ENV = "STARSCALE_WORKER_LOG"


def route_warnings(path: str) -> None:
    """Python warnings of this process (and the workers it forks) → the file at path."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s python worker {os.getpid()}: %(message)s", "%y/%m/%d %H:%M:%S"))
    logger = logging.getLogger("py.warnings")
    logger.addHandler(handler)
    logger.propagate = False
    logging.captureWarnings(True)


def main() -> None:
    from starscale import loopback
    host = os.environ.get(loopback.BIND_ENV)
    if host:
        try:
            loopback.pin_horovod_services(host)
        except ImportError as exc:       # no horovod in this Python: no Horovod services either
            print(f"starscale.worker: {loopback.BIND_ENV}={host} not applied ({exc})",
                  file=sys.stderr)
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            route_warnings(log)
        except OSError as exc:           # not this host's file (cluster): warnings stay on stderr
            print(f"starscale.worker: {LOG_ENV}={log} not opened ({exc})", file=sys.stderr)
    from pyspark import daemon
    daemon.manager()


if __name__ == "__main__":
    main()
