"""Issue 16 points 1–2: a clean terminal and one-line errors.

Every failure a user can cause ends with one stderr line `starscale <stage>: <what> (<where>);
log: <path>`, a non-zero exit and no Python or Java trace on the terminal; the trace is in the
log file. The error lines' expectations are written from the issue's wording, not from the code.
"""
from __future__ import annotations

import errno
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from starscale import cli, console
from tests.helpers import REPO

HEADER = ("marketplace\tcustomer_id\treview_id\tproduct_id\tproduct_parent\tproduct_title\t"
          "product_category\tstar_rating\thelpful_votes\ttotal_votes\tvine\tverified_purchase\t"
          "review_headline\treview_body\treview_date")
LOCAL = str(REPO / "conf" / "local.yaml")
TRACE_MARKERS = ("Traceback", "Py4JJavaError", "\tat org.", "at java.", "py4j.protocol")


def _row(i: int) -> str:
    return "\t".join(["US", "111", f"R{i}", "B00P", "999", "Title", "Wireless", str(i % 5 + 1),
                      "1", "2", "N", "Y", "ok", f"review number {i} is fine", "2015-08-31"])


def write_tsv(path: Path, rows: int = 50) -> Path:
    path.write_text("\n".join([HEADER, *(_row(i) for i in range(rows))]) + "\n")
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "lib")}


def _run_cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starscale", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(stderr: str, stage: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"starscale {stage}: "), lines[0]
    for marker in TRACE_MARKERS:
        assert marker not in stderr, stderr
    return lines[0]


def _log_of(line: str) -> Path:
    found = re.search(r"; log: (\S+)$", line)
    assert found, line
    return Path(found.group(1))


@pytest.fixture
def in_process(spark, monkeypatch, capsys):
    """cli.main in this process on the tests' session: returns (exit code, stdout, stderr).
    The shared test JVM keeps its own log4j2 settings."""
    monkeypatch.setattr(console, "reconfigure_jvm_log", lambda spark: None)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            console.close_run_log()
        out, err = capsys.readouterr()
        return code, out, err
    return run


# ---------------------------------------------------------------------- the message itself
class FakeJavaException:
    """What py4j hands back for a Java exception: toString() and getCause()."""

    def __init__(self, text: str, cause: "FakeJavaException | None" = None):
        self.text, self.cause = text, cause

    def toString(self):
        return self.text

    def getCause(self):
        return self.cause


class FakePy4JJavaError(Exception):
    def __init__(self, java):
        super().__init__("An error occurred while calling o123.count.\n: " + java.text)
        self.java_exception = java


@pytest.mark.parametrize("exc, expected", [
    (FakePy4JJavaError(FakeJavaException(
        "org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 "
        "failed 1 times, most recent failure: Lost task 0.0: org.apache.spark.SparkException: "
        "Encountered error while reading file file:///data/in/part-1.tsv.gz. Details: \n\tat x",
        FakeJavaException("java.io.EOFException: Unexpected end of input stream"))),
     "starscale ingest: corrupt or truncated compressed file (file:///data/in/part-1.tsv.gz)"),
    (FakePy4JJavaError(FakeJavaException(
        "java.io.IOException: Incomplete HDFS URI, no host: hdfs:///data/x.tsv")),
     "starscale ingest: no HDFS here: conf/cluster.yaml expects HDFS paths and a cluster"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/ingest/._staging"),
     "starscale ingest: disk full (no space left on device) (/out/ingest/._staging)"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/locked.tsv"),
     "starscale ingest: cannot read (permission denied) (/data/locked.tsv)"),
    (FakePy4JJavaError(FakeJavaException(
        "org.apache.hadoop.security.AccessControlException: Permission denied: user=bob, "
        "access=READ, inode=\"/data/x.tsv\"")),
     "starscale ingest: cannot read (permission denied)"),
    (FakePy4JJavaError(FakeJavaException(
        "org.apache.spark.sql.AnalysisException: [PATH_NOT_FOUND] Path does not exist: "
        "file:/data/missing.tsv.")),
     "starscale ingest: not found (file:/data/missing.tsv.)"),
    (ValueError("ingest.max_rejected_share: 0.4 of /data/x.tsv quarantined"),
     "starscale ingest: ingest.max_rejected_share: 0.4 of /data/x.tsv quarantined"),
])
def test_error_line_names_what_and_where(exc, expected):
    line = console.error_line("ingest", exc, "/out/logs/ingest.log")
    assert line.startswith(expected), line
    assert line.endswith("; log: /out/logs/ingest.log") and "\n" not in line


def test_error_line_of_a_failed_rank_and_of_an_experiment_step():
    rank = RuntimeError("train-lstm: training failed: rank 1: ConnectionResetError: peer gone\n"
                        "Traceback (most recent call last): ...")
    assert console.error_line("train-lstm", rank) == \
        "starscale train-lstm: training failed: rank 1: ConnectionResetError: peer gone"
    step = console.tag_stage(rank, "train-lstm", "lstm/600_none")
    assert isinstance(step, RuntimeError)
    assert console.error_line("experiment", step, "L") == \
        "starscale train-lstm: training failed: rank 1: ConnectionResetError: peer gone; log: L"
    java = FakePy4JJavaError(FakeJavaException(
        "org.apache.spark.SparkException: Job aborted",
        FakeJavaException("java.lang.IllegalStateException: something odd\n\tat a.b.C(C.java:1)")))
    assert console.error_line("prepare", java) == "starscale prepare: Spark failed: something odd"


def test_native_log_levels_set_before_tensorflow(monkeypatch):
    for key in console.NATIVE_QUIET:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.quiet_native_libraries(False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")        # the user's own value wins
    console.quiet_native_libraries(False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_bar_text():
    assert console.bar_text("ingest", 0, 0, 3.2) == "[experiment] ingest: 3 s"
    assert console.bar_text("ingest", 10, 40, 5.0) == \
        "[experiment] ingest: [#####...............] 10/40 tasks, 2.0 tasks/s, ETA 15 s, 5 s"


# ---------------------------------------------------------------------- each failure, end to end
def test_bad_config_key_is_one_line_before_spark():
    done = _run_cli(["ingest", "--conf", LOCAL, "--set", "corpus.rowz=5"], timeout=60)
    assert done.returncode == 2
    line = _assert_one_line_error(done.stderr, "ingest")
    assert "corpus.rowz" in line
    assert done.stdout == ""


def test_missing_input(in_process, tmp_path):
    missing = tmp_path / "nope.tsv"
    code, out, err = in_process("ingest", "--conf", LOCAL, "--set", f"run.output_dir={tmp_path}/out",
                                "--set", f"ingest.inputs=[{missing}]")
    assert code == 1
    line = _assert_one_line_error(err, "ingest")
    assert str(missing) in line and "not found" in line
    log = _log_of(line)
    assert log.parent == tmp_path / "out" / "logs" and "Traceback" in log.read_text()
    assert f"[ingest] log: {log}" in out


def test_corrupt_gz_names_the_file(in_process, tmp_path):
    packed = gzip.compress(write_tsv(tmp_path / "x.tsv", rows=20000).read_bytes())
    bad = tmp_path / "truncated.tsv.gz"
    bad.write_bytes(packed[: len(packed) // 2])          # cut mid-stream
    code, _, err = in_process("ingest", "--conf", LOCAL, "--set", f"run.output_dir={tmp_path}/out",
                              "--set", f"ingest.inputs=[{bad}]")
    assert code == 1
    line = _assert_one_line_error(err, "ingest")
    assert re.search(r"corrupt|truncated|gzip|compress", line.lower()), line
    # Spark 3.5's EOFException names no file; ingest's own check (issue 15) adds it
    assert "truncated.tsv.gz" in line, line


def test_unreadable_input(in_process, tmp_path, monkeypatch):
    src = write_tsv(tmp_path / "locked.tsv")
    if os.geteuid() != 0:
        src.chmod(0)
    else:                                  # root reads a mode-000 file: raise what Spark would
        from starscale.stages import ingest as ingest_stage

        def locked(spark, path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        monkeypatch.setattr(ingest_stage, "first_line", locked)
    code, _, err = in_process("ingest", "--conf", LOCAL, "--set", f"run.output_dir={tmp_path}/out",
                              "--set", f"ingest.inputs=[{src}]")
    assert code == 1
    line = _assert_one_line_error(err, "ingest")
    assert "permission denied" in line and "locked.tsv" in line, line


def test_full_disk(in_process, tmp_path, monkeypatch):
    from starscale import storage
    out = tmp_path / "out"

    def no_space(spark, final, write, base):
        raise OSError(errno.ENOSPC, "No space left on device", f"{final}/._staging/reviews")
    monkeypatch.setattr(storage, "publish", no_space)
    code, _, err = in_process("ingest", "--conf", LOCAL, "--set", f"run.output_dir={out}",
                              "--set", f"ingest.inputs=[{write_tsv(tmp_path / 'x.tsv')}]")
    assert code == 1
    line = _assert_one_line_error(err, "ingest")
    assert line.startswith(f"starscale ingest: disk full (no space left on device) ({out}/ingest"), line


def test_failed_rank(in_process, tmp_path, monkeypatch):
    from starscale.stages import train_lstm

    def rank_fails(spark, cfg, force=False, hooks=None):
        raise RuntimeError("train-lstm: training failed: rank 1: ConnectionResetError: "
                           "[Errno 104] Connection reset by peer")
    monkeypatch.setattr(train_lstm, "run", rank_fails)
    code, _, err = in_process("train-lstm", "--conf", LOCAL, "--set", f"run.output_dir={tmp_path}")
    assert code == 1
    line = _assert_one_line_error(err, "train-lstm")
    assert line.startswith("starscale train-lstm: training failed: rank 1: ConnectionResetError")


@pytest.mark.jvm
def test_full_data_train_on_a_laptop_says_what_cluster_yaml_expects(tmp_path):
    """`make full-data-train` with no arguments: spark-submit jobs/experiment.py --conf
    conf/cluster.yaml (hdfs:/// paths) on a machine without HDFS; driver JVM options as the
    Makefile's. Also the clean terminal under spark-submit: nothing but starscale's lines."""
    submit = Path(sys.executable).parent / "spark-submit"
    java_opts = (f"-Dlog4j2.configurationFile=file:{REPO}/lib/starscale/log4j2.properties "
                 f"-Dstarscale.log={tmp_path}/driver.log")
    done = subprocess.run([str(submit), "--driver-java-options", java_opts,
                           "jobs/experiment.py", "--conf", "conf/cluster.yaml"], cwd=REPO,
                          env={**_env(), "PYSPARK_DRIVER_PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, (done.stdout, done.stderr)
    # spark-submit's PythonRunner sends the driver's stderr to its stdout: one stream here
    terminal = done.stdout + done.stderr
    errors = [s for s in terminal.splitlines() if not s.startswith("[experiment] ")]
    line = _assert_one_line_error("\n".join(errors), "ingest")
    assert "conf/cluster.yaml expects HDFS paths and a cluster" in line
    assert "--set 'ingest.inputs=[" in line and "conf/local.yaml" in line


@pytest.mark.jvm
def test_clean_terminal_and_verbose(tmp_path):
    """A stage on a fresh JVM prints only starscale's lines; the log file has the JVM's log;
    --verbose brings Spark's own lines back."""
    args = ["make-corpus", "--conf", LOCAL, "--set", f"run.output_dir={tmp_path}/out",
            "--set", "corpus.rows=200", "--set", "corpus.partitions=2", "--set",
            "corpus.part_files=1"]
    done = _run_cli(args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    first = done.stdout.splitlines()[0]
    assert first.startswith("[make-corpus] log: ")
    log = Path(first.split("log: ", 1)[1])
    assert log.parent == tmp_path / "out" / "logs"
    text = log.read_text()
    assert "SparkContext: Running Spark version" in text       # the JVM's log went there
    assert "NativeCodeLoader" not in text                       # known noise: nowhere
    noisy = _run_cli([*args, "--force", "--verbose"])
    assert noisy.returncode == 0
    assert "SparkContext" in noisy.stderr


WORKER_PROBE = """
import os, sys, warnings
from starscale import config, console, spark as spark_mod
run_log = console.open_run_log("probe", sys.argv[1])
cfg = config.load_config([sys.argv[2]])
session = spark_mod.build_session(cfg.spark, "probe")

def probe(_):
    warnings.warn("worker-probe-warning-7261")
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL"), os.environ.get("GRPC_VERBOSITY")

print("ENV", session.sparkContext.parallelize(range(2), 2).map(probe).collect())
session.stop()
print("LOG", run_log.path)
"""


@pytest.mark.jvm
def test_python_workers_warnings_go_to_the_log_and_native_levels_reach_them(tmp_path):
    """A warning raised inside a Spark Python worker (a UDF) lands in the run's log file, not on
    the terminal (Spark copies the workers' stderr to the JVM's); the workers get the same
    native log levels as the driver (spark.executorEnv), so TensorFlow there is quiet too."""
    script = tmp_path / "probe.py"
    script.write_text(WORKER_PROBE)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), LOCAL], cwd=REPO,
                          env={k: v for k, v in _env().items() if k not in console.NATIVE_QUIET},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "worker-probe-warning-7261" not in done.stdout + done.stderr
    assert "ENV [('2', 'ERROR'), ('2', 'ERROR')]" in done.stdout
    log = Path(done.stdout.split("LOG ", 1)[1].strip())
    assert "worker-probe-warning-7261" in log.read_text()
