"""Horovod wiring on CPU: 2 Gloo processes as Spark tasks under local[2], one allreduce."""
from __future__ import annotations


def _allreduce_fn(base: float):
    # Horovod: runs once per rank inside a Spark task; ranks talk over Gloo, not Spark.
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    value = tf.constant([base * (hvd.rank() + 1), 1.0])
    summed = hvd.allreduce(value, op=hvd.Sum)
    averaged = hvd.allreduce(value, op=hvd.Average)
    return {"rank": hvd.rank(), "size": hvd.size(),
            "sum": summed.numpy().tolist(), "avg": averaged.numpy().tolist()}


def test_horovod_spark_run_allreduce_two_gloo_ranks(spark):
    import horovod.spark

    results = horovod.spark.run(_allreduce_fn, args=(10.0,), num_proc=2, use_gloo=True,
                                start_timeout=120, verbose=0)
    assert sorted(r["rank"] for r in results) == [0, 1]
    for r in results:
        assert r["size"] == 2
        # rank 0 sends 10, rank 1 sends 20: sum 30, mean 15; the constant column sums to 2
        assert r["sum"] == [30.0, 2.0]
        assert r["avg"] == [15.0, 1.0]


def test_horovod_build_has_tensorflow_and_gloo():
    import horovod.tensorflow as hvd

    assert hvd.gloo_built()
    assert not hvd.mpi_built()
