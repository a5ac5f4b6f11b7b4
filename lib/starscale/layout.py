"""Where everything lives under <run.output_dir>: the one module that builds output paths.

Every stage folder, model folder, checkpoint folder, the results table and the report are named
here from the config; stages, trainers and the pipeline ask this module instead of joining
paths themselves. Paths come back as given by the config (relative or URI); storage.qualify
makes them absolute where needed. A published folder's files are read from
storage.data_dir(spark, folder) (or storage.resolve with its manifest): the folder itself on
local disks and HDFS, its current version folder <folder>/v-<utc>-<id>/ on object stores.

    <run.output_dir>/
      corpus/  ingest/  prepare/                      one folder per data stage
      sample/<sample tag>/train                       e.g. sample/50000_random_under
      encode/<encode tag>/{vocab.txt, sequences/, features/, tfidf_model/}
      models/lr_<engine>/<encode tag>/                train-lr (the LR depends on the TF-IDF)
      models/lstm/<sample tag>/                       train-lstm (it does not)
      checkpoints/lstm/<sample tag>/                  kept between runs: a rerun resumes
      evaluate/<model name>_<sample tag>/  predict/<model name>_<sample tag>/
      results/{results.parquet, results.csv, predictions/<run_id>.parquet}
      report/  experiment/  mlruns/
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:                       # config.py imports this module: no runtime import back
    from starscale.config import Config

# Tables and files inside an encode folder.
SEQUENCES = "sequences"
FEATURES = "features"
VOCAB = "vocab.txt"
TFIDF_MODEL = "tfidf_model"
# Inside the prepare and sample folders.
REVIEWS = "reviews"
TRAIN = "train"


def join(folder: str, *names: str) -> str:
    """folder/name/...: the one way a file or table inside a published folder is named (pass
    storage.data_dir(spark, folder) when reading: the data may live in a version folder)."""
    return "/".join([folder.rstrip("/"), *names])


def stage_dir(output_dir: str, stage: str) -> str:
    """<run.output_dir>/<stage>."""
    return os.path.join(output_dir, stage)


def sample_dir(cfg: "Config") -> str:
    return os.path.join(cfg.stage_dir("sample"), cfg.sample_tag())


def encode_dir(cfg: "Config") -> str:
    return os.path.join(cfg.stage_dir("encode"), cfg.encode_tag())


def model_name(kind: str, engine: str | None) -> str:
    """'lr_mllib' / 'lr_sklearn' / 'lstm': the family folder under models/."""
    return f"lr_{engine}" if kind == "lr" else "lstm"


def model_dir(cfg: "Config", kind: str) -> str:
    """models/lr_<lr.engine>/<encode tag> or models/lstm/<sample tag>."""
    if kind == "lr":
        return os.path.join(cfg.stage_dir("models"), model_name("lr", cfg.lr.engine),
                            cfg.encode_tag())
    return os.path.join(cfg.stage_dir("models"), "lstm", cfg.lstm_tag())


def model_tag(cfg: "Config", kind: str) -> str:
    """The tag a model's results row carries: the encode tag for the LR, the sample tag for
    the LSTM (it does not depend on the TF-IDF part of the encode tag)."""
    return cfg.encode_tag() if kind == "lr" else cfg.lstm_tag()


def checkpoints_dir(cfg: "Config") -> str:
    return os.path.join(cfg.stage_dir("checkpoints"), "lstm", cfg.lstm_tag())


def results_dir(cfg: "Config") -> str:
    return cfg.stage_dir("results")


def report_dir(cfg: "Config") -> str:
    return cfg.stage_dir("report")


def experiment_dir(cfg: "Config") -> str:
    return cfg.stage_dir("experiment")


def mlflow_dir(local_output_dir: str) -> str:
    """The default MLflow file store beside the stage folders (a local output dir)."""
    return os.path.join(os.path.abspath(local_output_dir), "mlruns")


def evaluate_dir(cfg: "Config", name: str) -> str:
    """evaluate/<model name>_<sample tag>."""
    return os.path.join(cfg.stage_dir("evaluate"), f"{name}_{cfg.sample_tag()}")


def predict_dir(cfg: "Config", name: str) -> str:
    """predict.output, or predict/<model name>_<sample tag>."""
    return cfg.predict.output or os.path.join(cfg.stage_dir("predict"),
                                              f"{name}_{cfg.sample_tag()}")


def stage_output(stage: str, cfg: "Config") -> str:
    """The folder a pipeline stage publishes for cfg's cell."""
    return {
        "make-corpus": lambda: cfg.stage_dir("corpus"),
        "ingest": lambda: cfg.stage_dir("ingest"),
        "prepare": lambda: cfg.stage_dir("prepare"),
        "sample": lambda: sample_dir(cfg),
        "encode": lambda: encode_dir(cfg),
        "train-lr": lambda: model_dir(cfg, "lr"),
        "train-lstm": lambda: model_dir(cfg, "lstm"),
        "report": lambda: report_dir(cfg),
        "experiment": lambda: experiment_dir(cfg),
    }[stage]()
