"""What the terminal shows: starscale's own lines, one-line errors, a live bar; the rest to a log.

``open_run_log(stage, output_dir, verbose)`` starts one run's log: a file under
``<run.output_dir>/logs/`` (a temp folder when the output is not local) that gets Python's
logging and warnings, every traceback, and — through the log4j2 configuration written next to it
(from the shipped ``log4j2.properties``) — the JVM's log. Known noise (native-library and
hostname warnings, BLAS fallbacks) is kept out of it too. ``quiet_native_libraries`` sets
TensorFlow's and absl's C++ log levels in the environment before TensorFlow is imported (also in
Spark's and Horovod's child processes, which inherit it). ``--verbose`` keeps Spark's and the
libraries' own console output.

``error_line`` turns any exception (ValueError, OSError, a failed rank, a Py4JJavaError from the
JVM) into ``starscale <stage>: <what> (<file, key or rank>); log: <path>``; ``tag_stage``
records on an exception the experiment step that raised it. ``live`` draws one redrawn line with Spark's
task progress, rate and ETA while a stage runs, on a terminal only.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources

VERBOSE_ENV = "STARSCALE_VERBOSE"
LOG4J_TEMPLATE = "log4j2.properties"
# C++ log levels of TensorFlow (2: errors only: no oneDNN / CPU-feature banners), absl and gRPC.
NATIVE_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "ABSL_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}
LOGGER = logging.getLogger("starscale")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_native_libraries(verbose_: bool = False) -> None:
    """Set the libraries' log levels in the environment (before TensorFlow is imported; child
    processes inherit them). A value the user exported wins; --verbose sets none."""
    if verbose_:
        os.environ[VERBOSE_ENV] = "1"
        return
    for key, value in NATIVE_QUIET.items():
        os.environ.setdefault(key, value)


@dataclass
class RunLog:
    path: str                  # the log file
    log4j_conf: str            # the log4j2 configuration that sends the JVM's log there
    verbose: bool

    @property
    def console_level(self) -> str:
        return "INFO" if self.verbose else "OFF"

    @property
    def java_options(self) -> str:
        return (f"-Dlog4j2.configurationFile=file:{self.log4j_conf} -Dstarscale.log={self.path} "
                f"-Dstarscale.console={self.console_level}")


_ACTIVE: RunLog | None = None


def active() -> RunLog | None:
    """The run log opened by this process (None in tests that build sessions themselves)."""
    return _ACTIVE


def log_dir(output_dir: str) -> str:
    """<run.output_dir>/logs for a local output folder, else a temp folder on this host."""
    from starscale.storage import local_path
    local = local_path(output_dir)
    return os.path.join(local, "logs") if local else os.path.join(tempfile.gettempdir(),
                                                                   "starscale-logs")


def open_run_log(stage: str, output_dir: str, verbose_: bool = False) -> RunLog:
    """Start this run's log file and point Python's logging, warnings and the JVM's log at it."""
    global _ACTIVE
    folder = log_dir(output_dir)
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = os.path.join(folder, f"{stage}-{stamp}-{os.getpid()}.log")
    conf = os.path.join(folder, f".log4j2-{os.getpid()}.properties")
    # a copy on disk: inside a --py-files zip the shipped file is no path the JVM can open
    with open(conf, "w") as out:
        out.write((resources.files("starscale") / LOG4J_TEMPLATE).read_text())
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%y/%m/%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("py4j").setLevel(logging.WARNING)    # one INFO line per JVM call
    if verbose_:
        root.addHandler(logging.StreamHandler(sys.stderr))
    else:
        logging.captureWarnings(True)                        # Python warnings → the log only
    from starscale.config import redact_argv
    LOGGER.info("starscale %s: log of %s (argv %s)", stage, output_dir, redact_argv(sys.argv))
    _ACTIVE = RunLog(path, conf, verbose_)
    return _ACTIVE


def reconfigure_jvm_log(spark) -> None:
    """Point an already running JVM (spark-submit started it before our code ran) at the log."""
    run_log = active()
    if run_log is None:
        return
    jvm = spark._jvm
    try:
        jvm.System.setProperty("starscale.log", run_log.path)
        jvm.System.setProperty("starscale.console", run_log.console_level)
        jvm.org.apache.logging.log4j.core.config.Configurator.reconfigure(
            jvm.java.net.URI.create(f"file:{run_log.log4j_conf}"))
    except Exception as exc:            # noqa: BLE001 — a log setting never fails a run
        LOGGER.warning("could not reconfigure the JVM's log4j2: %s", exc)


def close_run_log() -> None:
    """Detach this process's run log from Python's logging (the file stays)."""
    global _ACTIVE
    if _ACTIVE is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == _ACTIVE.path:
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)
    _ACTIVE = None


# --------------------------------------------------------------------------------- errors
STAGE_ATTR = "starscale_stage"


def tag_stage(exc: BaseException, stage: str, cell: str = "") -> BaseException:
    """Record on an exception which experiment step raised it (type and traceback kept, so
    callers that catch ValueError still do); error_line names that stage."""
    try:
        setattr(exc, STAGE_ATTR, (stage, cell))
    except AttributeError:              # an exception type without a __dict__: no stage then
        pass
    return exc


HDFS_HINT = ("conf/cluster.yaml expects HDFS paths and a cluster (spark-submit --master yarn "
             "or spark://...); on one machine use conf/local.yaml, or point it at local data: "
             "--set 'ingest.inputs=[/path/reviews.tsv.gz]' --set run.output_dir=out/full")


def _java_messages(exc: BaseException) -> list[str]:
    """toString() of a Py4JJavaError's Java exception and each of its causes."""
    java = getattr(exc, "java_exception", None)
    out, seen = [], 0
    while java is not None and seen < 20:
        try:
            out.append(str(java.toString()))
            java = java.getCause()
        except Exception:              # noqa: BLE001 — the gateway may be gone
            break
        seen += 1
    return out


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _strip_java_class(text: str) -> str:
    """'java.io.EOFException: Unexpected end' → 'Unexpected end'."""
    return re.sub(r"^([a-z_$][\w$]*\.)+[A-Z][\w$]*(Exception|Error):\s*", "", text)


def describe(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, where: file, key or rank — '' when the message already says) for any
    exception a stage can raise; for Java errors, from the exception chain's messages."""
    java = _java_messages(exc)
    texts = java or [str(exc)]
    joined = "\n".join(texts)
    if "Incomplete HDFS URI" in joined or 'No FileSystem for scheme "hdfs"' in joined \
            or re.search(r"UnknownHostException|Call From .* to .*:8020", joined) and "hdfs" in joined:
        return "no HDFS here: " + HDFS_HINT, _match(r"(hdfs:/[^\s,'\"]+)", joined)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left on device" in joined:
        where = getattr(exc, "filename", None) or _match(r"(/[^\s:'\"]+)", joined)
        return "disk full (no space left on device)", where or ""
    read_file = _match(r"while reading file (\S+?)\.?\s", joined + " ")
    if re.search(r"Unexpected end of (ZLIB )?input stream|not in gzip format|ZipException|"
                 r"invalid (block type|distance|stored block)|Corrupt|EOFException", joined):
        named = _match(r"((?:[a-z0-9]+:)?/\S+?\.(?:gz|bz2|xz|zst|lz4|deflate|snappy))\b", joined)
        return ("corrupt or truncated compressed file",
                read_file or getattr(exc, "filename", "") or named or "")
    if isinstance(exc, PermissionError) or re.search(r"Permission denied|AccessControlException|"
                                                     r"AccessDeniedException", joined):
        return "cannot read (permission denied)", (getattr(exc, "filename", None) or read_file
                                                  or _match(r"(/[^\s:'\"]+)", joined))
    if isinstance(exc, FileNotFoundError) or re.search(r"Path does not exist|FileNotFoundException",
                                                       joined):
        return "not found", (getattr(exc, "filename", None)
                             or _match(r"(?:Path does not exist: |File )(\S+)", joined))
    if java:
        deepest = _strip_java_class(_first_line(texts[-1]))
        return f"Spark failed: {deepest or _first_line(texts[0])}", read_file
    message = _first_line(str(exc)) or type(exc).__name__
    if not isinstance(exc, (ValueError, RuntimeError, OSError)):
        message = f"{type(exc).__name__}: {message}"
    return message, ""


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    return found.group(1) if found else ""


def error_line(stage: str, exc: BaseException, log_path: str | None = None) -> str:
    """'starscale <stage>: <what> (<where>); log: <path>' on one line."""
    stage = getattr(exc, STAGE_ATTR, (stage, ""))[0]
    what, where = describe(exc)
    what = re.sub(rf"^{re.escape(stage)}:\s*", "", what)   # 'train-lstm: training failed: ...'
    line = f"starscale {stage}: {what}" + (f" ({where})" if where and where not in what else "")
    line = " ".join(line.split())
    return line + (f"; log: {log_path}" if log_path else "")


# --------------------------------------------------------------------------------- live bar
class live:
    """Context manager: while a stage runs, redraw one terminal line with Spark's task
    progress ('[experiment] ingest: 12/40 tasks, 3.1 tasks/s, ETA 9 s, 14 s'); nothing when
    stdout is not a terminal or --verbose (Spark's own output is on)."""

    def __init__(self, spark, label: str, interval_s: float = 0.5):
        self.spark, self.label, self.interval = spark, label, interval_s
        self.enabled = spark is not None and sys.stdout.isatty() and not verbose()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.enabled:
            self.started = time.time()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="starscale-bar")
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
        return False

    def _loop(self) -> None:
        tracker = self.spark.sparkContext.statusTracker()
        while not self._stop.wait(self.interval):
            try:
                done = total = 0
                for stage_id in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(stage_id)
                    if info is not None:
                        done += info.numCompletedTasks
                        total += info.numTasks
            except Exception:          # noqa: BLE001 — the bar never fails a run
                return
            sys.stdout.write("\r\033[K" + bar_text(self.label, done, total,
                                                   time.time() - self.started))
            sys.stdout.flush()


def bar_text(label: str, done: int, total: int, elapsed: float) -> str:
    """The live line's text: tasks done of the running Spark stages, rate and ETA."""
    if not total:
        return f"[experiment] {label}: {elapsed:.0f} s"
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 else ""
    width = 20
    filled = int(width * done / total)
    return (f"[experiment] {label}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"tasks, {rate:.1f} tasks/s{eta}, {elapsed:.0f} s")
