"""The function horovod.spark.run starts in every rank process: it puts the job's --py-files on
sys.path, then runs train_rank.

Horovod pickles the rank function and its arguments on the driver and unpickles them in a new
process started on the executor's host (its own interpreter, the shipped ./env/bin/python). That
process's PYTHONPATH is a copy of the Python worker's environment, which on standalone and
Kubernetes lacks the --py-files zip (Spark adds py-files to sys.path inside its workers only,
and YARN alone puts them on PYTHONPATH): a function pickled by reference to starscale would fail
to unpickle with "No module named starscale". So `launch` registers this module with cloudpickle
to be pickled by value and passes the rank arguments as JSON: unpickling needs nothing of
starscale, and `run_rank` adds the zips from the task's working directory (where Spark fetches
--py-files on every executor) before it imports starscale. This module imports nothing of ours.
"""
from __future__ import annotations


def run_rank(py_files: list[str], rank_args: dict) -> dict:
    """Train one rank: py_files are the job's --py-files names (fetched into the Spark task's
    working directory, HOROVOD_SPARK_WORK_DIR); rank_args is RankArgs.to_json()."""
    import os
    import sys
    work_dir = os.environ.get("HOROVOD_SPARK_WORK_DIR") or os.getcwd()
    for name in reversed(py_files):
        path = os.path.join(work_dir, name)
        if os.path.isfile(path) and path not in sys.path:
            sys.path.insert(0, path)
    from starscale.training.rank import RankArgs, train_rank
    return train_rank(RankArgs.from_json(rank_args))
