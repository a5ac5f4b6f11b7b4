"""Benchmark 6: logistic regression, Spark MLlib vs scikit-learn: fit time, peak memory, score.

Features: synthetic sparse TF-IDF-like rows shaped like the encode stage's `features/`
(encode.tfidf_features = 4000 columns, ≈33 non-zeros per row, L2-normalised; 8 of them from a
band of columns tied to the label, 20% label noise), star mix of Wireless v1_00. They are
generated once per size under out/bench/data (the same rows for both engines; not real text:
the score says only that both engines learn the same thing, not what the real data gives).
Both engines fit the multinomial LR of starscale.lr with the balanced class weights and
C = 1 (MLlib regParam = 1/(C·Σw), the same objective), lr.max_iter iterations at most; both
score the same 50k-row test set with the study's metric.

    python bench/lr.py                        # 100k, 500k, 1M rows
    python bench/lr.py --sizes 100000,500000 --repeats 3
    python bench/lr.py --quick
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "lr"
N_FEATURES = 4000
STAR_MIX = (0.140, 0.067, 0.090, 0.167, 0.536)


def raw_features(rows: int, seed: int) -> Path:
    """out/bench/data/lr_raw_<rows>_<seed>.parquet: label, weight, indices, values (made once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = common.WORK / "data" / f"lr_raw_{rows}_{seed}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    labels = rng.choice(5, size=rows, p=STAR_MIX)
    noisy = np.where(rng.random(rows) < 0.2, rng.integers(0, 5, size=rows), labels)
    signal = noisy[:, None] * 200 + rng.integers(0, 200, size=(rows, 8))
    background = 1000 + rng.zipf(1.3, size=(rows, 25)) % (N_FEATURES - 1000)
    idx = np.sort(np.concatenate([signal, background], axis=1), axis=1)
    values = rng.uniform(0.5, 1.5, size=idx.shape)
    dup = np.zeros(idx.shape, dtype=bool)
    dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
    values[dup] = 0.0                                # repeated column: keep one entry
    values /= np.sqrt((values ** 2).sum(axis=1, keepdims=True))
    keep = ~dup
    counts = keep.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    table = pa.table({
        "review_id": pa.array([f"L{i:010d}" for i in range(rows)]),
        "label": pa.array(labels.astype(np.int32)),
        "weight": pa.array(np.ones(rows)),
        "indices": pa.ListArray.from_arrays(pa.array(offsets), pa.array(idx[keep].astype(np.int32))),
        "values": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[keep])),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def vector_features(spark, raw: Path) -> str:
    """The same rows as a Spark table review_id, label, weight, features (vector), made once."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql import functions as F
    out = raw.with_suffix(".vectors")
    if (out / "_SUCCESS").exists():
        return str(out)
    to_vec = F.udf(lambda i, v: SparseVector(N_FEATURES, i, v), VectorUDT())
    (spark.read.parquet(str(raw))
     .select("review_id", "label", "weight", to_vec("indices", "values").alias("features"))
     .write.mode("overwrite").parquet(str(out)))
    return str(out)


def load_csr(raw: Path):
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    table = pq.read_table(raw, columns=["label", "weight", "indices", "values"])
    indptr = np.asarray(table.column("indices").combine_chunks().offsets)
    X = sp.csr_matrix((pc.list_flatten(table.column("values")).to_numpy(),
                       pc.list_flatten(table.column("indices")).to_numpy(), indptr),
                      shape=(table.num_rows, N_FEATURES))
    return X, table.column("label").to_numpy(), table.column("weight").to_numpy()


def run_sklearn(raw: Path, test_raw: Path, max_iter: int) -> dict:
    import time
    import numpy as np
    from starscale import lr, metrics, resample
    started = time.perf_counter()
    X, y, w = load_csr(raw)
    cw = resample.balanced_class_weights(dict(enumerate(np.bincount(y, minlength=5))))
    load_s = time.perf_counter() - started
    model = lr.fit_sklearn(X, y, w * _weights_of(y, cw), C=1.0, max_iter=max_iter)
    fit_s = time.perf_counter() - started - load_s
    Xt, yt, _ = load_csr(test_raw)
    score = metrics.summary(yt, model.predict(Xt))["score"]
    return {"load_seconds": load_s, "fit_seconds": fit_s, "score": score,
            "iterations": int(model.n_iter_.max())}


def _weights_of(y, cw):
    import numpy as np
    table = np.array([cw.get(k, 0.0) for k in range(5)])
    return table[y]


def run_mllib(spark, vec: str, test_vec: str, max_iter: int) -> dict:
    import time
    from pyspark.sql import functions as F
    from starscale import lr, metrics, resample
    train = spark.read.parquet(vec)
    cw = resample.balanced_class_weights(resample.compute_class_counts(train, "label"))
    weighted = lr.with_fit_weight(train, cw)
    total = weighted.agg(F.sum(lr.FIT_WEIGHT)).first()[0]
    started = time.perf_counter()
    model = lr.fit_mllib(weighted, lr.mllib_reg_for_C(1.0, total), 0.0, max_iter)
    fit_s = time.perf_counter() - started
    pred = model.transform(spark.read.parquet(test_vec)).select("label", "prediction").toPandas()
    score = metrics.summary(pred["label"].to_numpy(), pred["prediction"].to_numpy().astype(int))["score"]
    return {"fit_seconds": fit_s, "score": score, "iterations": int(model.summary.totalIterations)}


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__)
    args.add_argument("--sizes", default=None, help="comma-separated train rows (default 100000,500000,1000000)")
    args.add_argument("--max-iter", type=int, default=100)
    args = common.finish_args(args.parse_args(argv), NAME)
    started = common.machine()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (
        [2000, 4000] if args.quick else [100_000, 500_000, 1_000_000])
    test_rows = 1000 if args.quick else 50_000
    import sklearn.linear_model  # noqa: F401  (imports outside the timing)
    spark = common.spark_session()
    test_raw = raw_features(test_rows, seed=99)
    test_vec = vector_features(spark, test_raw)
    results = []
    for rows in sizes:
        raw = raw_features(rows, seed=1)
        vec = vector_features(spark, raw)
        runs = {"mllib": [], "sklearn": []}
        for i in range(args.repeats):
            res, secs, mem = common.measure(lambda: run_mllib(spark, vec, test_vec, args.max_iter))
            runs["mllib"].append({**res, "seconds": secs, "peak_mib": mem})
            res, secs, mem = common.measure(lambda: run_sklearn(raw, test_raw, args.max_iter),
                                            descendants=False)
            runs["sklearn"].append({**res, "seconds": secs, "peak_mib": mem})
            print(f"  {rows} run {i + 1}: mllib fit {runs['mllib'][-1]['fit_seconds']:.1f} s, "
                  f"sklearn fit {runs['sklearn'][-1]['fit_seconds']:.1f} s", flush=True)
        for engine, rs in runs.items():
            s = common.summarize_runs(rs)
            results.append({"rows": rows, "engine": engine, "fit_seconds": s["fit_seconds"],
                            "seconds": s["seconds"], "iterations": s["iterations"],
                            "score": round(s["score"], 4),
                            "peak_mib": s["peak_mib"]["total"], "runs": s})
    common.print_table(results, ["rows", "engine", "fit_seconds", "seconds", "iterations", "score",
                                 "peak_mib"], f"LR fit, median of {args.repeats}")
    spark.stop()
    return common.write_report(args, NAME, results,
                               {"n_features": N_FEATURES, "test_rows": test_rows,
                                "max_iter": args.max_iter}, started)


if __name__ == "__main__":
    main(sys.argv[1:])
