"""A GPU rank's setup, checked on CPU: the fail-fast checks and the learning rate.

Each check refuses with one line naming the rank: NCCL missing from Horovod, the CUDA libraries
TF could not load (TF says so only in a warning the executors' log level hides), a GPU that cannot
be pinned any more. The learning rate: one scaling rule, and a warmup that never reads the rate
back from the device.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


def test_check_nccl_refuses_a_build_without_it_only_with_use_gpu():
    from starscale.training.devices import check_nccl
    check_nccl(False, False, "rank 0/2")
    check_nccl(True, True, "rank 0/2")
    with pytest.raises(ValueError, match=r"^rank 1/2: train.use_gpu is true but Horovod was "
                                         r"built without NCCL .*make setup-gpu"):
        check_nccl(True, False, "rank 1/2")


def test_a_rank_with_use_gpu_stops_at_horovods_missing_nccl_first():
    """setup_devices on this machine's Horovod (built without NCCL): the rank's first error is
    NCCL's, before any GPU is looked for. A child process: hvd.init in one process, size 1."""
    code = (
        "import types\n"
        "from starscale.training import rank\n"
        "args = types.SimpleNamespace(train=types.SimpleNamespace(use_gpu=True, gpu_drill=False),\n"
        "                             seed=1,\n"
        "                             lstm=types.SimpleNamespace(deterministic=False))\n"
        "try:\n"
        "    rank.setup_devices(args)\n"
        "except ValueError as exc:\n"
        "    print('ERROR', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ERROR")), out.stderr[-2000:])
    assert line.startswith("ERROR rank 0/1: train.use_gpu is true but Horovod was built without NCCL")


def test_library_names_follow_the_tensorflow_build():
    from starscale.training.devices import cuda_library_names
    assert cuda_library_names("12.2", "8") == [
        "libcuda.so.1", "libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12",
        "libnvJitLink.so.12", "libcufft.so.11", "libcusparse.so.12", "libcusolver.so.11",
        "libcudnn.so.8"]
    assert "libnvJitLink.so.11" not in cuda_library_names("11.8", "8")


def test_library_problems_name_each_file_that_does_not_load(tmp_path):
    from starscale.training.devices import gpu_library_problems
    wheel = tmp_path / "nvidia" / "cudnn" / "lib"
    wheel.mkdir(parents=True)
    (wheel / "libcudnn.so.8").write_bytes(b"")
    loadable = {"libcuda.so.1", str(wheel / "libcudnn.so.8")}

    def dlopen(path):
        if path not in loadable:
            raise OSError(f"{path}: cannot open shared object file: No such file or directory")

    names = ["libcuda.so.1", "libcudart.so.12", "libcudnn.so.8"]
    assert gpu_library_problems(names, dlopen, [str(wheel)]) == [
        "libcudart.so.12: libcudart.so.12: cannot open shared object file: No such file or "
        "directory"]
    assert gpu_library_problems(names, dlopen, []) == [
        "libcudart.so.12: libcudart.so.12: cannot open shared object file: No such file or "
        "directory",
        "libcudnn.so.8: libcudnn.so.8: cannot open shared object file: No such file or directory"]


def test_pin_gpu_without_a_gpu_names_the_rank_and_the_reason():
    from starscale.training import devices
    with pytest.raises(ValueError, match=r"^rank 3/4: train.use_gpu is true but TensorFlow sees "
                                         r"no GPU in this process: TensorFlow .* is a CPU build"):
        devices.pin_gpu(True, 0, "rank 3/4")             # this machine's tensorflow-cpu


def _fake_gpus(monkeypatch, visible_after: list):
    """TF with two GPUs that was initialised already: changing devices raises RuntimeError."""
    import tensorflow as tf
    gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]

    def refuse(*_a, **_k):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus)
    monkeypatch.setattr(tf.config, "set_visible_devices", refuse)
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", refuse)
    monkeypatch.setattr(tf.config, "get_visible_devices",
                        lambda kind=None: [gpus[i] for i in visible_after])


def test_pin_gpu_refuses_a_gpu_it_could_not_pin(monkeypatch):
    from starscale.training import devices
    monkeypatch.setattr(devices, "spark_task_gpus", lambda: ["1"])
    _fake_gpus(monkeypatch, visible_after=[0, 1])        # both still visible
    with pytest.raises(ValueError, match=r"^rank 1/2: cannot make GPU 1 \(spark task resources, "
                                         r"Spark address 1\) its only GPU: TensorFlow was "
                                         r"initialised in this process before"):
        devices.pin_gpu(True, 0, "rank 1/2")


def test_pin_gpu_accepts_visibility_that_is_already_right(monkeypatch, capsys):
    from starscale.training import devices
    monkeypatch.setattr(devices, "spark_task_gpus", lambda: ["1"])
    _fake_gpus(monkeypatch, visible_after=[1])
    assert devices.pin_gpu(True, 0, "rank 1/2").index == 1
    assert "rank 1/2 on GPU 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- learning rate
def test_one_scaling_rule_square_root_of_the_effective_batch():
    from starscale.training.rank import scaled_learning_rate
    assert scaled_learning_rate(1e-3, 128, 2048, True) == pytest.approx(4e-3)       # 4 GPUs × 512
    assert scaled_learning_rate(1e-3, 128, 256, True) == pytest.approx(1e-3 * 2 ** 0.5)
    assert scaled_learning_rate(1e-3, 128, 128, True) == pytest.approx(1e-3)
    assert scaled_learning_rate(1e-3, 128, 2048, False) == 1e-3


def test_gpu_overlay_trains_a_small_cell_about_as_many_rows_as_the_cpu_run():
    """conf/gpu.yaml's min_steps at its effective batch (512 × 4) asks for the rows base's 2000
    steps of 2 × 128 do, not 8 times more: ≈ 10 epochs of a 50k cell, not 80."""
    from starscale.config import load_config
    from starscale.training.rank import planned_epochs, scaled_learning_rate
    base = load_config([str(REPO / "conf" / "base.yaml")])
    gpu = load_config([str(REPO / "conf" / "cluster.yaml"), str(REPO / "conf" / "gpu.yaml")])
    effective = gpu.lstm.batch_size * gpu.train.workers
    assert effective == 2048
    base_rows = base.lstm.min_steps * base.lstm.batch_size * base.train.workers
    assert base_rows <= gpu.lstm.min_steps * effective < 1.1 * base_rows
    assert planned_epochs(gpu.lstm.epochs, gpu.lstm.min_steps, 50_000 // effective) == 11
    assert scaled_learning_rate(gpu.lstm.learning_rate, gpu.lstm.learning_rate_batch, effective,
                                gpu.train.scale_lr) == pytest.approx(4e-3)


class _WriteOnlyRate:
    """An optimizer's learning-rate variable that records assignments and fails on any read."""

    def __init__(self):
        self.assigned: list[float] = []

    def assign(self, value):
        self.assigned.append(float(value))

    def _read(self, *_a, **_k):
        pytest.fail("the warmup read the learning rate back (a device-to-host sync)")

    numpy = __float__ = __array__ = read_value = value = _read


def test_warmup_sets_the_rate_from_python_without_reading_it():
    import types
    from starscale.training.callbacks import WarmupLR
    rate = _WriteOnlyRate()
    warmup = WarmupLR(1e-3, 4e-3, warmup_epochs=1, steps_per_epoch=4)
    warmup.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=rate)))
    logs = []
    for epoch in range(2):
        warmup.on_epoch_begin(epoch)
        for batch in range(4):
            warmup.on_train_batch_begin(batch)
        logs.append({})
        warmup.on_epoch_end(epoch, logs[-1])
    # epoch 0: a straight line from 1e-3 to 4e-3 at its last batch; epoch 1: 4e-3, set once
    assert rate.assigned == pytest.approx([1.75e-3, 2.5e-3, 3.25e-3, 4e-3, 4e-3])
    assert [entry["lr"] for entry in logs] == pytest.approx([4e-3, 4e-3])


# --------------------------------------------------------------------------- bench/gpu_check.py
def test_gpu_check_keeps_two_ranks_on_one_gpu_off_nccl():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    shared = gpu_check.collectives(gpus=1, local_size=2, force_cpu=False, nccl_built=True)
    assert shared["shared_gpu"] and shared["collectives"] == "host (gloo)"
    assert "2 ranks share 1 GPU(s)" in shared["note"] and "broadcast" in shared["note"]
    assert gpu_check.collectives(2, 2, False, True) == {"shared_gpu": False,
                                                        "collectives": "nccl", "note": ""}
    assert gpu_check.collectives(1, 2, True, True)["collectives"] == "host (gloo)"   # --force-cpu
    assert not gpu_check.collectives(1, 2, True, True)["shared_gpu"]
