"""The TF-IDF model's save (issue 16 point 4): the IDF weights are written from the driver
(idf.npy), not by Spark's IDFModel writer, whose one-row local DataFrame put idf + docFreq
(16 bytes per feature: 16,730 KiB at 2**20 hashed features) inside a task. The loaded model
must transform exactly as the fitted one."""
from __future__ import annotations

import os

import numpy as np
from pyspark.ml.feature import IDFModel

from starscale import encode

TEXTS = ["great phone works fine", "battery died after a week", "fine case great price",
         "terrible screen cracked", "works as described great"]


def test_hashed_tfidf_round_trip_without_spark_writing_the_weights(spark, tmp_path):
    rows = spark.createDataFrame([(i, t) for i, t in enumerate(TEXTS)], "id int, text string")
    model = encode.tfidf_pipeline(ngram_max=2, num_features=2 ** 20, hashed=True).fit(rows)
    path = str(tmp_path / "tfidf_model")
    encode.save_tfidf_model(model, path)

    saved_stages = sorted(os.listdir(os.path.join(path, encode.TFIDF_PIPELINE, "stages")))
    assert not any("IDF" in name for name in saved_stages), saved_stages
    weights = np.load(os.path.join(path, encode.TFIDF_IDF))
    assert weights.shape == (2 ** 20,) and weights.dtype == np.float64
    # Spark's IDF: ln((n + 1) / (df + 1)); "great" is in 3 of the 5 texts, an unseen bucket in 0
    assert weights.max() == np.log(6 / 1) and np.isclose(np.sort(np.unique(weights))[0],
                                                         np.log(6 / 4))

    loaded = encode.load_tfidf_model(path)
    assert [type(s).__name__ for s in loaded.stages] == [type(s).__name__ for s in model.stages]
    idf = [s for s in loaded.stages if isinstance(s, IDFModel)][0]
    assert idf.numDocs == 5 and idf.getOutputCol() == "_tfidf"
    before = {r["id"]: r["features"] for r in model.transform(rows).select("id", "features")
              .collect()}
    after = {r["id"]: r["features"] for r in loaded.transform(rows).select("id", "features")
             .collect()}
    assert before == after
