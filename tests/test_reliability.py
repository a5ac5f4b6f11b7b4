"""Issue 15: outputs that cannot be clobbered, fresh outputs after a code or input change,
secrets that never reach disk, and the last bad inputs. Each test failed on the code before."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from starscale import storage
from tests.helpers import rank_args


def _write_table(spark, rows):
    def write(staging):
        spark.createDataFrame(rows, "id long, v string").write.parquet(staging + "/table")
        return {"counts": {"rows": len(rows)}}
    return write


# --------------------------------------------------------------------------- 2: foreign folders
def test_publish_refuses_a_folder_it_did_not_write(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "reviews.tsv").write_text("precious\n")
    with pytest.raises(ValueError, match=rf"output {raw} exists and has no starscale _MANIFEST"):
        storage.publish(spark, str(raw), _write_table(spark, [(1, "a")]), {"stage": "predict"})
    assert (raw / "reviews.tsv").read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["raw"]          # no staging, no lease left behind
    plain_file = tmp_path / "notes.txt"
    plain_file.write_text("mine")
    with pytest.raises(ValueError, match="has no starscale _MANIFEST"):
        storage.publish(spark, str(plain_file), _write_table(spark, [(1, "a")]), {"stage": "x"})
    assert plain_file.read_text() == "mine"


# --------------------------------------------------------------------------- 1: leases
def _lease(path, **holder):
    with open(str(path) + storage.LEASE_SUFFIX, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "stage": "train-lstm",
                   "run_id": "r-first", "started_utc": "2026-01-01T00:00:00+00:00", **holder}, fh)


def test_second_writer_fails_at_once_naming_the_holder(spark, tmp_path):
    out = tmp_path / "model"
    storage.publish(spark, str(out), _write_table(spark, [(1, "a")]), {"stage": "t"})
    _lease(out)                                   # a live holder: this very process
    calls = []
    with pytest.raises(storage.LeaseHeld, match=rf"train-lstm run r-first \(host "
                       rf"{socket.gethostname()}, pid {os.getpid()}, since 2026-01-01"):
        storage.publish(spark, str(out), lambda s: calls.append(s) or {}, {"stage": "t"})
    assert calls == [] and not os.path.exists(str(out) + storage.STAGING_SUFFIX)
    assert storage.read_manifest(spark, str(out))["counts"] == {"rows": 1}


def test_the_lease_is_taken_while_writing_and_released_after(spark, tmp_path):
    out = str(tmp_path / "o")
    seen = []

    def write(staging):
        seen.append(json.loads(open(out + storage.LEASE_SUFFIX).read()))
        return _write_table(spark, [(1, "a")])(staging)

    storage.publish(spark, out, write, {"stage": "t"}, run_id="run-7")
    assert (seen[0]["run_id"], seen[0]["pid"], seen[0]["stage"]) == ("run-7", os.getpid(), "t")
    assert {"host", "started_utc"} <= set(seen[0])
    assert not os.path.exists(out + storage.LEASE_SUFFIX)
    with pytest.raises(RuntimeError, match="boom"):
        storage.publish(spark, out, lambda s: (_ for _ in ()).throw(RuntimeError("boom")),
                        {"stage": "t"})
    assert not os.path.exists(out + storage.LEASE_SUFFIX)    # released on failure too


def test_stale_leases_are_broken_and_foreign_ones_only_with_the_flag(spark, tmp_path,
                                                                      monkeypatch, capsys):
    out = tmp_path / "o"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lease(out, pid=dead.pid, run_id="r-dead")               # a killed run on this host
    assert storage.publish(spark, str(out), _write_table(spark, [(1, "a")]),
                           {"stage": "t"})["complete"]
    assert "breaking the stale lease" in capsys.readouterr().err
    _lease(out, host="other-host.example", pid=1, run_id="r-far")   # cannot be checked here
    with pytest.raises(storage.LeaseHeld, match=r"r-far .*other-host.*STARSCALE_BREAK_LEASE=1"):
        storage.publish(spark, str(out), _write_table(spark, [(1, "a")]), {"stage": "t"})
    monkeypatch.setenv(storage.BREAK_LEASE_ENV, "1")
    assert storage.publish(spark, str(out), _write_table(spark, [(1, "a")]),
                           {"stage": "t"})["complete"]
    assert not os.path.exists(str(out) + storage.LEASE_SUFFIX)


# --------------------------------------------------------------------------- 4: freshness
def test_a_changed_raw_file_with_same_size_and_mtime_reruns(spark, tmp_path):
    raw = tmp_path / "in.tsv"
    raw.write_text("a\t1\n")
    calls = []

    def write(staging):
        calls.append(1)
        return _write_table(spark, [(1, "a")])(staging)

    kw = dict(stage="ingest", output=str(tmp_path / "o"), config_hash="h", config={},
              raw_inputs=[str(raw)], write=write)
    storage.run_stage(spark, **kw)
    assert storage.run_stage(spark, **kw)["skipped"] is True
    stat = raw.stat()
    raw.write_text("b\t2\n")                                # same size...
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...same mtime (cp -p, rsync -t)
    assert storage.run_stage(spark, **kw)["skipped"] is False
    assert len(calls) == 2


PROBE = textwrap.dedent('''
    from starscale import layout

    def write(staging):
        return WRITE(staging)
''')


def test_a_code_change_in_what_the_stage_runs_reruns(spark, tmp_path, monkeypatch):
    import importlib
    import starscale
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "_fresh_probe.py").write_text(PROBE)
    monkeypatch.setattr(starscale, "__path__", [*starscale.__path__, str(pkg)])
    importlib.invalidate_caches()
    probe = importlib.import_module("starscale._fresh_probe")
    probe.WRITE = _write_table(spark, [(1, "a")])
    try:
        kw = dict(stage="t", output=str(tmp_path / "o"), config_hash="h", config={},
                  write=probe.write)
        first = storage.run_stage(spark, **kw)
        assert first["code"]["starscale"] == starscale.__version__
        assert storage.run_stage(spark, **kw)["skipped"] is True
        (pkg / "_fresh_probe.py").write_text(PROBE + "\n# a fix\n")
        assert storage.run_stage(spark, **kw)["skipped"] is False
        # a module the stage imports counts too: layout's source is part of the hash
        base = storage.code_fingerprint("starscale._fresh_probe")["sha256"]
        real = importlib.util.find_spec("starscale.layout").loader
        monkeypatch.setattr(type(real), "get_source",
                            lambda self, name, _orig=type(real).get_source:
                            _orig(self, name) + ("#x" if name == "starscale.layout" else ""))
        assert storage.code_fingerprint("starscale._fresh_probe")["sha256"] != base
    finally:
        sys.modules.pop("starscale._fresh_probe", None)


# --------------------------------------------------------------------------- 5: secrets, NaN
FAKE_SECRET = "FAKE-s3cr3t-9f1c2e"


def test_secret_keys_are_redacted_and_nan_rejected(config_factory):
    from starscale.config import REDACTED
    cfg = config_factory(f"spark.conf.spark.hadoop.fs.s3a.secret.key={FAKE_SECRET}",
                         f"spark.conf.spark.authenticate.secret={FAKE_SECRET}",
                         f"spark.conf.spark.ssl.keyPassword={FAKE_SECRET}",
                         f"spark.conf.spark.hadoop.fs.s3a.session.token={FAKE_SECRET}")
    assert cfg.spark.conf["spark.hadoop.fs.s3a.secret.key"] == FAKE_SECRET   # Spark still gets it
    conf = cfg.to_dict()["spark"]["conf"]
    assert {k: v for k, v in conf.items() if v == REDACTED} == {
        "spark.hadoop.fs.s3a.secret.key": REDACTED, "spark.authenticate.secret": REDACTED,
        "spark.ssl.keyPassword": REDACTED, "spark.hadoop.fs.s3a.session.token": REDACTED}
    assert conf["spark.sql.session.timeZone"] == "UTC"
    for bad in ("ingest.max_rejected_share=.nan", "ingest.max_rejected_share=.inf",
                "lstm.learning_rate=-.inf"):
        with pytest.raises(ValueError, match=rf"{bad.split('=')[0]}: expected a finite number"):
            config_factory(bad)


# --------------------------------------------------------------------------- 8: last bad inputs
def test_control_chars_and_a_repeated_header_get_their_own_reasons(spark, config_factory,
                                                                    tmp_path):
    from tests.test_ingest import HEADER, read_table, run_ingest, tsv_row
    src = tmp_path / "joined.tsv"
    lines = [HEADER, tsv_row("R1"), tsv_row("R2", body="nul\x00here"), HEADER,
             tsv_row("R3", headline="bell\x07"), tsv_row("R4", body="tab\tless"), tsv_row("R5")]
    src.write_bytes("\n".join(lines).encode() + b"\n")
    cfg, manifest = run_ingest(spark, config_factory, [src], "ingest.max_rejected_share=1.0")
    got = sorted((r.line_no, r.reason, r.detail) for r in read_table(spark, cfg, "quarantine")
                 .collect())
    assert got == [
        (3, "control_chars", "control character (C0 or DEL) at column 59"),
        (4, "repeated_header", "the header line again at line 4 (files joined?)"),
        (5, "control_chars", "control character (C0 or DEL) at column 57"),
        (6, "field_count", "16 fields (expected 15)"),
    ]
    assert sorted(r.review_id for r in read_table(spark, cfg, "reviews").collect()) == ["R1", "R5"]
    assert manifest["totals"]["rejected"] == {"control_chars": 2, "field_count": 1,
                                              "repeated_header": 1}


def test_a_truncated_gzip_fails_in_one_line_naming_it(spark, config_factory, tmp_path):
    import gzip
    from starscale.stages import ingest as ingest_stage
    from tests.test_ingest import HEADER, set_inputs, tsv_row
    good = tmp_path / "good.tsv.gz"
    good.write_bytes(gzip.compress((HEADER + "\n" + tsv_row("G1") + "\n").encode()))
    body = "\n".join([HEADER] + [tsv_row(f"R{i}", body=f"text {i} " * 20) for i in range(3000)])
    data = gzip.compress(body.encode() + b"\n")
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    cfg = config_factory(set_inputs([good, cut]))
    with pytest.raises(ValueError) as info:
        ingest_stage.run(spark, cfg, force=True)
    message = str(info.value)
    assert message.startswith(f"file:{cut}: truncated or corrupt compressed file (")
    assert message.endswith("nothing was published") and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not os.path.exists(cfg.stage_dir("ingest"))
    assert not os.path.exists(cfg.stage_dir("ingest") + storage.STAGING_SUFFIX)


# --------------------------------------------------------------------------- 7: training edges
def test_uneven_shards_are_refused_with_the_numbers():
    from starscale.training import data
    with pytest.raises(ValueError, match=r"3 shards do not divide evenly among 2 workers \(rows "
                       r"per rank \[2000, 1000\]: each epoch would train 2 x 1000 of 3000 rows\)"):
        data.check_even_shards({0: 1000, 1: 1000, 2: 1000}, 2)
    with pytest.raises(ValueError, match=r"uneven among 2 workers \(rows per rank \[1000, 10\]"):
        data.check_even_shards({0: 1000, 1: 10}, 2)
    data.check_even_shards({0: 500, 1: 500, 2: 500, 3: 499}, 2)      # encode's equal shards
    data.check_even_shards({0: 7}, 1)


def test_best_weights_and_state_commit_together(tmp_path, monkeypatch):
    """A kill between writing the new best weights and state.json leaves the previous state
    with the best weights it was saved with."""
    import io
    import numpy as np
    from starscale.training import checkpoints
    monkeypatch.setattr(checkpoints, "plain_copy", lambda model, lcfg: model)
    monkeypatch.setattr(checkpoints, "model_bytes", lambda model: b"model bytes")
    ckpt = str(tmp_path / "ckpt")
    storage.make_dirs(ckpt)
    first = [np.full(3, 1.0)]
    checkpoints.save_epoch(ckpt, 1, None, None, first, True, {"best_epoch": 1})
    real_write = storage.write_bytes

    def killed_at_state(path, data=None, write=None):
        if path.endswith(checkpoints.STATE_FILE):
            raise KeyboardInterrupt("killed")
        return real_write(path, data, write)

    monkeypatch.setattr(storage, "write_bytes", killed_at_state)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_epoch(ckpt, 2, None, None, [np.full(3, 2.0)], True, {"best_epoch": 2})
    monkeypatch.setattr(storage, "write_bytes", real_write)
    state = checkpoints.read_state(ckpt)
    assert (state["completed_epochs"], state["best_epoch"]) == (1, 1)
    with np.load(io.BytesIO(storage.read_bytes(f"{ckpt}/{state['best_file']}"))) as npz:
        assert npz["w0"].tolist() == [1.0, 1.0, 1.0]
    # the next save commits epoch 2 and its best together and drops the old best file
    checkpoints.save_epoch(ckpt, 2, None, None, [np.full(3, 2.0)], True, {"best_epoch": 2})
    state = checkpoints.read_state(ckpt)
    with np.load(io.BytesIO(storage.read_bytes(f"{ckpt}/{state['best_file']}"))) as npz:
        assert (state["best_epoch"], npz["w0"].tolist()) == (2, [2.0, 2.0, 2.0])
    assert sorted(n for n in os.listdir(ckpt) if n.startswith("best")) == [state["best_file"]]


def test_the_watchdog_covers_horovod_init(config_factory, tmp_path, monkeypatch):
    """A rank stuck before fit (here: in Horovod's init) fails with the reason, bounded."""
    import time
    from starscale.training import rank as rank_mod
    from starscale.training.watchdog import TrainingFailed

    def hang(args):
        while True:                      # Python-level waits: the async Stalled lands here
            time.sleep(0.05)

    monkeypatch.setattr(rank_mod, "setup_devices", hang)
    cfg = config_factory("train.stall_timeout_s=1", "train.start_timeout_s=2")
    args = rank_args(cfg, tmp_path / "ckpt", seq_dir=str(tmp_path),
                     vocab_path=str(tmp_path / "v"), vocab_size=10, max_len=5,
                     train_rows={0: 10}, hard_exit=False)
    started = time.monotonic()
    with pytest.raises(TrainingFailed, match=r"before Horovod init.*train.start_timeout_s=2\)"
                       r".*last progress: horovod init"):
        rank_mod.train_rank(args)
    assert time.monotonic() - started < 30
    from starscale.training import checkpoints
    assert "horovod init" in checkpoints.read_failure(str(tmp_path / "ckpt"))["message"]


# --------------------------------------------------------------------------- 6: models are data
def _tamper_zip(src, dst, old: bytes, new: bytes):
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                assert old in data
                data = data.replace(old, new, 1)
            zout.writestr(item, data)


ARCH = {"vocab_size": 20, "max_len": 5, "embedding_dim": 4, "units": 4, "layers": 1,
        "bidirectional": False, "spatial_dropout": 0.2, "dropout": 0.0, "recurrent_dropout": 0.0,
        "mixed_precision": False, "embedding_trainable": True}


def test_an_lstm_bundle_is_rebuilt_from_its_shape_and_weights(tmp_path, monkeypatch):
    """Models are data: model.json (build_model's arguments) + weights.npz, no class names."""
    import numpy as np
    from tensorflow import keras
    from starscale import lstm, model_store
    model = lstm.build_model(**ARCH, seed=1)
    bundle = lstm.save_bundle(model, str(tmp_path / "m"), "<pad>\n", {}, ARCH)
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: pytest.fail("load_model"))
    loaded = model_store.load_lstm_bundle(bundle)
    x = np.array([[1, 2, 3, 4, 5], [0, 0, 7, 8, 19]], dtype=np.int32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert model_store.find_lstm_bundle(str(tmp_path)) == bundle
    assert model_store.cached_lstm(bundle) is model_store.cached_lstm(bundle)


def _bundle_with(tmp_path, name, arch=None, weights=None):
    """A copy of a good bundle whose model.json or weights.npz is replaced."""
    import io
    import numpy as np
    from starscale import lstm
    folder = tmp_path / name
    lstm.save_bundle(lstm.build_model(**ARCH, seed=1), str(folder), "<pad>\n", {}, ARCH)
    if arch is not None:
        (folder / "model.json").write_text(json.dumps(arch))
    if weights is not None:
        buf = io.BytesIO()
        np.savez(buf, **{f"w{i}": w for i, w in enumerate(weights)})
        (folder / "weights.npz").write_bytes(buf.getvalue())
    return str(folder)


def test_a_tampered_lstm_bundle_fails_with_the_file_and_key(tmp_path):
    import numpy as np
    from starscale import model_store
    cases = [
        ({**ARCH, "class_name": "evil_payload.Layer"}, None,
         r"model.json: unknown key\(s\) class_name"),
        ({k: v for k, v in ARCH.items() if k != "units"}, None, r"missing key\(s\) units"),
        ({**ARCH, "vocab_size": 10 ** 12}, None, r"model.json: vocab_size must be int in"),
        ({**ARCH, "dropout": float("nan")}, None, r"model.json: dropout must be float"),
        ({**ARCH, "bidirectional": "yes"}, None, r"bidirectional must be true or false"),
        ({**ARCH, "units": 8}, None, r"weights.npz: w1 is float32 \(4, 16\), the model that "
                                     r"model.json describes needs float \(4, 32\)"),
        (None, [np.zeros((20, 4), np.float32)], r"weights.npz: 1 weight arrays, the model"),
        (None, [np.array([object()] * 3, dtype=object)] * 6, r"weights.npz: unreadable"),
    ]
    for i, (arch, weights, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            model_store.load_lstm_bundle(_bundle_with(tmp_path, f"b{i}", arch, weights))
    bad = _bundle_with(tmp_path, "garbage")
    with open(os.path.join(bad, "weights.npz"), "wb") as fh:
        fh.write(b"not a zip")
    with pytest.raises(ValueError, match=r"garbage/weights.npz: not a numpy .npz archive"):
        model_store.load_lstm_bundle(bad)


def test_an_old_keras_bundle_is_refused_without_importing_its_module(tmp_path, monkeypatch):
    from starscale import lstm, model_store
    model = lstm.build_model(20, 5, embedding_dim=4, units=4, seed=1)
    good = tmp_path / "model.keras"
    model.save(str(good))
    assert model_store.load_lstm_bundle(str(good)).count_params() == model.count_params()
    (tmp_path / "evil_payload.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = tmp_path / "bad" / "model.keras"
    bad.parent.mkdir()
    _tamper_zip(good, bad, b'"module": "keras.layers"', b'"module": "evil_payload"')
    with pytest.raises(ValueError, match=r"model.keras: refusing to load a model whose config "
                       r"names evil_payload\."):
        model_store.load_lstm_bundle(str(bad.parent))
    with pytest.raises(ValueError, match="refusing to load"):
        model_store.cached_lstm(str(bad))
    assert not (tmp_path / "imported").exists()


def test_a_tfidf_pipeline_with_a_foreign_stage_class_is_refused(spark, tmp_path):
    from starscale import encode, model_store
    texts = spark.createDataFrame([("a b c",), ("b c d",)], "text string")
    fitted = encode.tfidf_pipeline(1, 8, hashed=False).fit(texts)
    folder = str(tmp_path / "tfidf_model")
    fitted.write().save(folder)
    assert model_store.load_tfidf_pipeline(spark, folder).transform(texts).count() == 2
    stage = sorted(os.listdir(os.path.join(folder, "stages")))[0]
    meta = os.path.join(folder, "stages", stage, "metadata", "part-00000")
    text = open(meta).read()
    open(meta, "w").write(text.replace("org.apache.spark.ml.feature.RegexTokenizer",
                                       "pyspark.evil.Payload"))
    crc = os.path.join(os.path.dirname(meta), ".part-00000.crc")
    if os.path.exists(crc):
        os.remove(crc)                   # as a tamperer would: else Hadoop's checksum trips
    with pytest.raises(ValueError, match=rf"stages/{stage}: refusing to load stage class "
                       r"'pyspark.evil.Payload'"):
        model_store.load_tfidf_pipeline(spark, folder)


# --------------------------------------------------------------------------- 9: loopback default
def test_local_mode_pins_horovods_driver_services_to_loopback(spark, config_factory, tmp_path,
                                                              monkeypatch):
    import horovod.spark
    from starscale import loopback
    from starscale.training import launch
    pinned = []
    monkeypatch.setattr(loopback, "pin_horovod_services", pinned.append)
    monkeypatch.setattr(horovod.spark, "run", lambda *a, **k: [{"rank": 0}])
    assert spark.sparkContext.master.startswith("local")
    cfg = config_factory("train.launcher=spark", "train.bind_host=null")
    assert cfg.train.bind_host is None
    launch.launch_spark(cfg, rank_args(cfg, tmp_path, attempt="a"))
    assert pinned == ["127.0.0.1"]


def _task_service_address(_):
    """Inside a Spark Python worker: where a Horovod task service (the server horovod.spark.run
    starts in each task) listens, the host this worker's port finder is pinned to, and the
    addresses the service offers its peers (no nics: Horovod would list every interface)."""
    import horovod.runner.common.util.network as network
    from horovod.runner.common.util import secret
    from starscale import loopback
    service = network.BasicService("probe", secret.make_secret_key(), nics=None)
    try:
        offered = sorted(addr for addrs in service.addresses().values() for addr, _ in addrs)
        return service._server.socket.getsockname()[0], loopback.pinned_host(), offered
    finally:
        service.shutdown()


def test_local_mode_pins_horovods_task_services_in_the_workers_to_loopback(spark):
    """The executor side, with no setting from the user: spark.build_session makes
    starscale.worker the Python daemon in local mode, so the Horovod services a Spark task
    starts listen on 127.0.0.1 only (Horovod's own finder binds every interface: '0.0.0.0')
    and offer only that address to their peers."""
    assert spark.sparkContext.master.startswith("local")
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.python.daemon.module") == "starscale.worker"
    found = spark.sparkContext.parallelize(range(2), 2).map(_task_service_address).collect()
    assert found == [("127.0.0.1", "127.0.0.1", ["127.0.0.1"])] * 2


def test_predict_reads_raw_tsv_through_ingests_reader(spark, tmp_path):
    """A BOM header is a header, not a review; a stray CR stays inside its review's body; a
    CRLF line loses its CR: as ingest reads the same file."""
    from starscale.stages import predict
    from tests.test_ingest import HEADER, tsv_row
    src = tmp_path / "raw.tsv"
    lines = ["\ufeff" + HEADER, tsv_row("R1", body="half\rhalf", star="4"),
             tsv_row("R2", star="2") + "\r", HEADER, "short\tline"]
    src.write_bytes("\n".join(lines).encode() + b"\n")
    reviews, quarantine = predict.read_tsv_reviews(spark, str(src))
    assert sorted(tuple(r) for r in reviews.collect()) == [("R1", 4, "half\rhalf"),
                                                           ("R2", 2, "fine")]
    assert [(q.reason, q.raw) for q in quarantine.collect()] == [("field_count", "short\tline")]


# --------------------------------------------------------------------------- 3: object stores
class Killed(BaseException):
    """The process dies here."""


class CopyDeleteFS:
    """An object store: keys only, a 'rename' copies every object and then deletes the
    originals, one step each; only a single-object write is atomic. kill_at: die at that step."""

    def __init__(self, files=None, kill_at=None):
        self.files = dict(files or {})
        self.kill_at, self.steps = kill_at, 0

    def _step(self):
        if self.kill_at is not None and self.steps == self.kill_at:
            raise Killed(self.steps)
        self.steps += 1

    def _under(self, path):
        return [k for k in self.files if k == path or k.startswith(path + "/")]

    def exists(self, path):
        return bool(self._under(path))

    def delete(self, path):
        for key in self._under(path):
            self._step()
            del self.files[key]

    def rename(self, src, dst):
        keys = sorted(self._under(src))
        for key in keys:
            self._step()
            self.files[dst + key[len(src):]] = self.files[key]
        for key in keys:
            self._step()
            del self.files[key]

    def write_text(self, path, text):
        self._step()
        self.files[path] = text

    def read_text(self, path):
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def children(self, path):
        return sorted({path + "/" + k[len(path) + 1:].split("/")[0]
                       for k in self._under(path) if k != path})


FINAL = "s3a://bucket/out/prepare"
PARTS = {"old": 2, "new": 3}             # each payload's reviews/part-* objects


def _payload_write(fs, payload):
    def write(folder):
        for i in range(PARTS[payload]):
            fs.write_text(f"{folder}/reviews/part-{i}", payload)
        fs.write_text(f"{folder}/vocab.txt", payload)
        return {"wrote": payload}
    return write


def _what_readers_see(fs, final):
    """None (no manifest: refused), else the payload of what a reader reads: the manifest's
    folder resolved as every reader resolves it (storage.resolve), then its reviews/ table and
    vocab.txt, asserted complete and of one payload."""
    manifest = fs.files.get(final + "/" + storage.MANIFEST)
    if manifest is None:
        return None
    folder = storage.resolve(final, json.loads(manifest))
    data = {k: v for k, v in fs.files.items()
            if k == f"{folder}/vocab.txt" or k.startswith(f"{folder}/reviews/")}
    payload = json.loads(manifest)["wrote"]
    assert set(data.values()) == {payload}, f"partial output read as complete: {data}"
    assert sorted(data) == sorted([f"{folder}/reviews/part-{i}" for i in range(PARTS[payload])]
                                  + [f"{folder}/vocab.txt"]), data
    return payload


def _starting_point(kind):
    """The store before the publish: nothing; an output of the versioned protocol; or an
    unversioned one (data at the top, a manifest without data_version: the previous
    object-store protocol, or a folder copied from a local run)."""
    if kind == "nothing":
        return {}
    if kind == "unversioned":
        files = {f"{FINAL}/reviews/part-{i}": "old" for i in range(PARTS["old"])}
        return {**files, f"{FINAL}/vocab.txt": "old",
                f"{FINAL}/{storage.MANIFEST}": json.dumps({"wrote": "old", "complete": True})}
    fs = CopyDeleteFS()
    storage.publish_with(fs, FINAL, _payload_write(fs, "old"), {"stage": "t"}, False)
    return dict(fs.files)


@pytest.mark.parametrize("before", ["versioned", "unversioned", "nothing"])
def test_object_store_publish_keeps_a_complete_version_readable_at_every_kill(before):
    """Killed at every step of publish on a store whose rename is copy + delete: a reader
    resolving the manifest sees the complete old version until the pointer moves, then the
    complete new one (never nothing, never a mix); the next publish clears the debris."""
    assert not storage.renames_atomic(FINAL) and storage.renames_atomic("/tmp/x")
    assert storage.versioned_publish(FINAL)
    base = _starting_point(before)
    old = _what_readers_see(CopyDeleteFS(base), FINAL)
    assert old == (None if before == "nothing" else "old")
    probe = CopyDeleteFS(base)
    storage.publish_with(probe, FINAL, _payload_write(probe, "new"), {"stage": "t"}, False)
    total = probe.steps
    seen = []
    for kill_at in range(total):
        fs = CopyDeleteFS(base, kill_at=kill_at)
        with pytest.raises(Killed):
            storage.publish_with(fs, FINAL, _payload_write(fs, "new"), {"stage": "t"}, False)
        seen.append(_what_readers_see(fs, FINAL))
        fs.kill_at = None                                     # the rerun, not killed
        storage.publish_with(fs, FINAL, _payload_write(fs, "new"), {"stage": "t"}, False)
        assert _what_readers_see(fs, FINAL) == "new"
        version = json.loads(fs.files[f"{FINAL}/{storage.MANIFEST}"])[storage.VERSION_KEY]
        assert fs.children(FINAL) == [f"{FINAL}/{storage.MANIFEST}", f"{FINAL}/{version}"]
        assert not any(k.startswith(FINAL + storage.STAGING_SUFFIX) for k in fs.files)
    # the old version until the one manifest write, the new one from then on: one switch
    switch = seen.index("new")
    assert seen == [old] * switch + ["new"] * (total - switch)
    assert 0 < switch < total               # data written first, the marker removed last
    # the rename-swap protocol on such a store does leave partial outputs: why it is not used
    if before == "unversioned":
        swap = CopyDeleteFS(base)
        storage.publish_with(swap, FINAL, _payload_write(swap, "new"), {"stage": "t"}, True)
        partial = 0
        for kill_at in range(swap.steps):
            fs = CopyDeleteFS(base, kill_at=kill_at)
            with pytest.raises(Killed):
                storage.publish_with(fs, FINAL, _payload_write(fs, "new"), {"stage": "t"}, True)
            try:
                _what_readers_see(fs, FINAL)
            except AssertionError:
                partial += 1
        assert partial > 0


def test_old_versions_are_deleted_only_after_the_pointer_moved():
    fs = CopyDeleteFS(_starting_point("versioned"))
    old = storage.resolve(FINAL, json.loads(fs.files[f"{FINAL}/{storage.MANIFEST}"]))
    log = []
    real_delete, real_write = fs.delete, fs.write_text
    fs.delete = lambda path: (log.append(("delete", path)), real_delete(path))[1]
    fs.write_text = lambda path, text: (log.append(("write", path)), real_write(path, text))[1]
    storage.publish_with(fs, FINAL, _payload_write(fs, "new"), {"stage": "t"}, False)
    pointer = log.index(("write", f"{FINAL}/{storage.MANIFEST}"))
    assert ("delete", old) in log[pointer:] and ("delete", old) not in log[:pointer]


def test_a_manifest_cannot_point_readers_outside_its_folder():
    assert storage.resolve(FINAL, None) == FINAL
    assert storage.resolve(FINAL, {"complete": True}) == FINAL
    good = "v-20260101T000000Z-0123abcd"
    assert storage.resolve(FINAL, {storage.VERSION_KEY: good}) == f"{FINAL}/{good}"
    for bad in ("../ingest", "v-1/../../x", "/etc", "", 3):
        with pytest.raises(ValueError, match=r"data_version .* is not a version folder name"):
            storage.resolve(FINAL, {storage.VERSION_KEY: bad})


def _read_table(spark, out):
    return sorted(tuple(r) for r in spark.read.parquet(
        storage.data_dir(spark, out) + "/table").collect())


def test_versioned_publish_through_hadoop_on_a_local_disk(spark, tmp_path, monkeypatch):
    """The versioned protocol through Spark's Hadoop filesystem ($STARSCALE_VERSIONED_PUBLISH=1
    forces it on a local path): version folder + pointer, readers resolve it with or without
    Spark, the skip rule holds, a killed write leaves the old version and an orphan the next
    publish removes, a failed first write leaves nothing."""
    monkeypatch.setenv(storage.VERSIONED_PUBLISH_ENV, "1")
    out = tmp_path / "o"
    kw = dict(stage="t", output=str(out), config_hash="h", config={})
    first = storage.run_stage(spark, write=_write_table(spark, [(1, "a")]), **kw)
    version = first[storage.VERSION_KEY]
    assert sorted(os.listdir(out)) == [storage.MANIFEST, version]
    assert storage.data_dir(spark, str(out)) == f"{out}/{version}"
    assert storage.data_dir(None, str(out)) == f"{out}/{version}"          # pyarrow's read
    assert _read_table(spark, str(out)) == [(1, "a")]
    assert storage.run_stage(spark, write=_write_table(spark, [(9, "z")]), **kw)["skipped"]

    def killed(folder):
        _write_table(spark, [(2, "half")])(folder)
        raise KeyboardInterrupt("killed")               # a BaseException: nothing cleans up

    with pytest.raises(KeyboardInterrupt):
        storage.publish(spark, str(out), killed, {"stage": "t"})
    assert len([n for n in os.listdir(out) if n.startswith("v-")]) == 2    # the orphan
    assert storage.require_manifest(spark, str(out), "t")[storage.VERSION_KEY] == version
    assert _read_table(spark, str(out)) == [(1, "a")]
    second = storage.run_stage(spark, write=_write_table(spark, [(2, "b")]), force=True, **kw)
    assert sorted(os.listdir(out)) == [storage.MANIFEST, second[storage.VERSION_KEY]]
    assert _read_table(spark, str(out)) == [(2, "b")]
    assert not os.path.exists(str(out) + storage.LEASE_SUFFIX)

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="boom"):
        storage.publish(spark, str(fresh), lambda f: (_ for _ in ()).throw(RuntimeError("boom")),
                        {"stage": "t"})
    assert not fresh.exists()
