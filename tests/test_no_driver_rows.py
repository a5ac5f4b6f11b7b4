"""No rows through the driver: the data stages, train-lr (MLlib) and evaluate collect only
tables whose size does not grow with the rows (counts per class, split, file or hash bucket; the vocabulary's top k), never a table
of reviews. Every DataFrame the stages bring to the driver is caught and its optimized plan is
read: under the projections, filters and sorts at its top there must be an aggregate whose
grouping keys are not row keys, a limit, or a local relation. (train-lr's scikit-learn engine and
ADASYN collect the features on purpose, bounded by lr.sklearn_max_rows / sample.adasyn_max_rows;
the LSTM is scored on the driver, streaming its shards.)"""
from __future__ import annotations

import re

import pytest
from pyspark.sql import DataFrame

from starscale.stages import encode, evaluate, ingest, make_corpus, prepare, sample, train_lr

PASS_THROUGH = {"Project", "Filter", "Sort", "SubqueryAlias", "Repartition",
                "RepartitionByExpression", "RebalancePartitions"}
BOUNDED = {"GlobalLimit", "LocalLimit", "LocalRelation", "OneRowRelation"}
# columns with one value per review (or per line): grouping by them gives a row-sized table
ROW_KEYS = {"review_id", "text", "body", "raw", "value", "features", "ids", "line_no",
            "kept_review_id", "_line", "row_id"}
COLLECTORS = ("collect", "toPandas", "toLocalIterator")   # take/head/first collect a Limit


def _children(node):
    kids = node.children()
    return [kids.apply(i) for i in range(kids.size())]


def row_sized_reason(df: DataFrame) -> str | None:
    """None when the collected table is bounded; otherwise what makes it row-sized."""
    node = df._jdf.queryExecution().optimizedPlan()
    while node.nodeName() in PASS_THROUGH:
        (node,) = _children(node)
    name = node.nodeName()
    if name in BOUNDED:
        return None
    if name == "Aggregate":
        keys = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)#\d+",
                              node.groupingExpressions().mkString(",")))
        if not node.groupingExpressions().size():
            return None
        return f"aggregate grouped by row keys {sorted(keys & ROW_KEYS)}" if keys & ROW_KEYS \
            else None
    return f"collects a {name} (one row per input row)"


@pytest.fixture
def collected(monkeypatch):
    """Every DataFrame the code under test brings to the driver, with its plan verdict."""
    seen: list[tuple[str, str | None]] = []
    for method in COLLECTORS:
        original = getattr(DataFrame, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            seen.append((f"{_method}: {self._jdf.queryExecution().optimizedPlan().nodeName()}",
                         row_sized_reason(self)))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(DataFrame, method, spy)
    return seen


def test_plan_check_flags_row_sized_tables(spark):
    reviews = spark.createDataFrame([("R1", 5, "good"), ("R2", 1, "bad")],
                                    "review_id string, star int, text string")
    assert row_sized_reason(reviews.groupBy("star").count()) is None
    assert row_sized_reason(reviews.orderBy("star").limit(1)) is None
    assert row_sized_reason(reviews.where("star > 1").select("text")) is not None
    assert "row keys ['review_id']" in row_sized_reason(reviews.groupBy("review_id").count())


@pytest.mark.slow
def test_data_stages_collect_no_row_sized_table(spark, config_factory, collected):
    cfg = config_factory("corpus.rows=3000", "corpus.part_files=2", "encode.vocab_size=500",
                         "ladder.sizes=[1000, full]", "sample.size=full")
    make_corpus.run(spark, cfg)
    ingest.run(spark, cfg)
    prepare.run(spark, cfg)
    for method in ("random_under", "random_over", "class_weight"):
        sample.run(spark, config_factory("corpus.rows=3000", "corpus.part_files=2",
                                         "ladder.sizes=[1000, full]", "sample.size=full",
                                         f"sample.method={method}"))
    encode.run(spark, cfg)
    encode.run(spark, config_factory("corpus.rows=3000", "corpus.part_files=2",
                                     "encode.vocab_size=500", "ladder.sizes=[1000, full]",
                                     "sample.size=full", "encode.tfidf_hashed=true",
                                     "encode.tfidf_features=1048576"))
    assert len(collected) >= 10, collected          # the spy saw the stages' collects
    row_sized = [(call, reason) for call, reason in collected if reason]
    assert row_sized == []


@pytest.mark.slow
def test_lr_training_and_evaluation_collect_no_row_sized_table(spark, config_factory, collected):
    """train-lr (MLlib, a regularisation grid chosen on validation) and evaluate: the test and
    validation predictions are written by Spark and counted by an aggregate."""
    settings = ("corpus.rows=3000", "corpus.part_files=2", "encode.vocab_size=500",
                "ladder.sizes=[1000, full]", "sample.size=full", "lr.engine=mllib",
                "lr.max_iter=5", "lr.reg_grid=[0.001, 0.01]", "evaluate.model=lr")
    cfg = config_factory(*settings)
    for stage in (make_corpus, ingest, prepare, sample, encode):
        stage.run(spark, cfg)
    del collected[:]
    trained = train_lr.run(spark, cfg)
    evaluated = evaluate.run(spark, cfg)
    assert trained["test_rows"] == evaluated["test_rows"] > 0
    assert evaluated["score"] == trained["score"]
    assert len(collected) >= 4, collected           # label counts, 2 grid + test confusions
    row_sized = [(call, reason) for call, reason in collected if reason]
    assert row_sized == []
