"""conf/gpu.yaml for YARN and Kubernetes: executors derived from or checked against train.workers,
the GPU vendor, the memory overhead, and client deploy mode only."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starscale.config import load_config
from starscale.spark import cluster_deploy_error

REPO = Path(__file__).resolve().parents[1]
GPU = [str(REPO / "conf" / "cluster.yaml"), str(REPO / "conf" / "gpu.yaml")]


def test_gpu_overlay_derives_one_executor_per_gpu_rank():
    conf = load_config(GPU).spark.conf
    assert conf["spark.executor.instances"] == "4"            # train.workers 4, 1 GPU each
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert conf["spark.executor.memoryOverhead"] == "6g"
    assert "spark.executor.pyspark.memory" not in conf


def test_derived_executors_follow_workers_and_gpus_per_executor():
    cfg = load_config(GPU, ["train.workers=8", "encode.shards=8",
                            "spark.conf.spark.executor.resource.gpu.amount=2"])
    assert cfg.spark.conf["spark.executor.instances"] == "4"
    assert load_config(GPU, ["train.workers=2"]).spark.conf["spark.executor.instances"] == "2"


def test_executor_instances_given_must_match_workers():
    assert load_config(GPU, ["spark.conf.spark.executor.instances=4"]).spark.conf[
        "spark.executor.instances"] == "4"
    with pytest.raises(ValueError, match=r"^spark\.conf\.spark\.executor\.instances: '2' executors x 1 "
                                         r"GPU\(s\) do not match train\.workers = 4 .*set it to 4"):
        load_config(GPU, ["spark.conf.spark.executor.instances=2"])
    with pytest.raises(ValueError, match=r"set it to 8"):
        load_config(GPU, ["train.workers=8", "spark.conf.spark.executor.instances=4"])


@pytest.mark.parametrize("overrides, message", [
    (["spark.conf.spark.task.resource.gpu.amount=0.5"],
     r"^spark\.conf\.spark\.task\.resource\.gpu\.amount: '0\.5', but each Horovod rank needs a GPU of its own"),
    (["spark.conf.spark.executor.resource.gpu.amount=0"],
     r"^spark\.conf\.spark\.executor\.resource\.gpu\.amount: '0'"),
    (["train.workers=3", "spark.conf.spark.executor.resource.gpu.amount=2"],
     r"^train\.workers: 3 ranks do not fill executors of 2 GPUs"),
])
def test_gpu_scheduling_mistakes_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(GPU, overrides)


def test_task_gpus_without_executor_gpus_is_refused(tmp_path):
    overlay = tmp_path / "gpu-task-only.yaml"
    overlay.write_text('spark:\n  conf:\n    spark.task.resource.gpu.amount: "1"\n'
                       "train:\n  launcher: spark\n")
    with pytest.raises(ValueError, match=r"^spark\.conf\.spark\.executor\.resource\.gpu\.amount: None"):
        load_config([str(overlay)])


def test_without_gpu_scheduling_or_spark_ranks_nothing_is_derived():
    assert "spark.executor.instances" not in load_config([GPU[0]]).spark.conf
    local = load_config(GPU, ["train.launcher=local"]).spark.conf
    assert "spark.executor.instances" not in local


def test_cluster_deploy_mode_is_refused_client_is_not():
    assert cluster_deploy_error({"spark.submit.deployMode": "client"}) is None
    assert cluster_deploy_error({}) is None
    yarn = cluster_deploy_error({"spark.submit.deployMode": "cluster"})
    k8s = cluster_deploy_error({"spark.submit.deployMode": "client",
                                "spark.kubernetes.submitInDriver": "true"})
    assert yarn == k8s
    assert yarn.startswith("cluster deploy mode is not supported") and "--deploy-mode client" in yarn
    assert "\n" not in yarn


@pytest.mark.slow
def test_a_driver_in_kubernetes_cluster_mode_stops_with_one_line(tmp_path):
    """The driver pod of Kubernetes' cluster mode runs spark-submit in client mode with
    spark.kubernetes.submitInDriver=true: the job reads it from the JVM and stops before its config."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    out = subprocess.run([str(bin_dir / "spark-submit"), "--master", "local[1]",
                          "--conf", "spark.kubernetes.submitInDriver=true",
                          "--conf", "spark.ui.enabled=false",
                          str(REPO / "jobs" / "experiment.py"), "--conf", "conf/not-on-this-node.yaml"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    said = out.stdout + out.stderr         # spark-submit prints the Python driver's stderr on stdout
    assert out.returncode == 2
    assert ("starscale experiment: cluster deploy mode is not supported: the driver would run on a "
            "cluster node") in said
    assert "not-on-this-node" not in said
