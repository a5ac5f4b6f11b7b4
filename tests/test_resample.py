"""Resampling: counts against imbalanced-learn, weights against scikit-learn, determinism, stage."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from sklearn.utils.class_weight import compute_class_weight

from starscale import resample, storage

# 1..5 stars, no ties: 5 is the majority, 2 the minority
COUNTS = {1: 30, 2: 12, 3: 18, 4: 25, 5: 60}
# ties for both the majority (3, 5) and the minority (1, 4): imblearn picks the lowest label
TIED = {1: 7, 2: 9, 3: 15, 4: 7, 5: 15}

STRATEGIES = ["auto", "majority", "not minority", "not majority", "all", "dict"]
DICTS = {"random_under": {5: 20, 1: 12, 3: 0}, "random_over": {2: 40, 4: 33}}
SAMPLERS = {"random_under": RandomUnderSampler, "random_over": RandomOverSampler}


def labels(counts: dict[int, int]) -> np.ndarray:
    return np.repeat(list(counts), list(counts.values()))


def imblearn_counts(counts, method, strategy) -> dict[int, int] | None:
    """Class counts of imblearn's fit_resample on the same labels; None where it refuses."""
    y = labels(counts)
    sampler = SAMPLERS[method](sampling_strategy=strategy, random_state=0)
    try:
        _, y_res = sampler.fit_resample(np.arange(len(y)).reshape(-1, 1), y)
    except ValueError:
        return None
    return {int(k): int(v) for k, v in sorted(Counter(y_res).items())}


def sampled(frame, method, counts, targets, seed):
    """resample.resample with the rank buckets the sample stage computes first."""
    return resample.resample(frame, method, counts, targets, seed,
                             resample.compute_rank_buckets(frame, seed))


def reviews_frame(spark, counts, partitions=None):
    rows = [(f"R{star}x{i:03d}", star, f"text {star} {i}")
            for star, n in counts.items() for i in range(n)]
    frame = spark.createDataFrame(rows, "review_id string, star int, text string")
    return frame.repartition(partitions) if partitions else frame


@pytest.mark.parametrize("counts", [COUNTS, TIED], ids=["distinct", "tied"])
@pytest.mark.parametrize("method", ["random_under", "random_over"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_target_counts_match_imblearn(counts, method, name):
    strategy = DICTS[method] if name == "dict" else name
    if name == "dict" and counts is TIED:
        strategy = {"random_under": {3: 4, 5: 15}, "random_over": {1: 15, 4: 8}}[method]
    expected = imblearn_counts(counts, method, strategy)
    if expected is None:                  # 'majority' with an over-sampler
        with pytest.raises(ValueError, match="sample.strategy"):
            resample.target_counts(counts, method, strategy)
    else:
        targets = resample.target_counts(counts, method, strategy)
        # imblearn's output cannot show a class asked down to 0 rows
        assert {k: n for k, n in targets.items() if n > 0} == expected
        assert set(targets) == set(counts)


@pytest.mark.parametrize("method", ["random_under", "random_over"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_spark_counts_match_imblearn(spark, method, name):
    strategy = DICTS[method] if name == "dict" else name
    expected = imblearn_counts(COUNTS, method, strategy)
    if expected is None:
        pytest.skip("imblearn refuses this combination (checked in the target test)")
    targets = resample.target_counts(COUNTS, method, strategy)
    out = sampled(reviews_frame(spark, COUNTS), method, COUNTS, targets, seed=44)
    rows = out.collect()
    assert {int(k): v for k, v in sorted(Counter(r.star for r in rows).items())} == \
        {k: v for k, v in expected.items() if v > 0}
    assert out.columns == ["review_id", "star", "text", "weight", "copy"]
    assert all(r.weight == 1.0 for r in rows)
    originals = [r.review_id for r in rows if r.copy == 0]
    assert len(originals) == len(set(originals))   # each original at most once


def test_target_count_errors_name_the_key():
    with pytest.raises(ValueError, match=r"sample.strategy.5.*only 60"):
        resample.target_counts(COUNTS, "random_under", {5: 61})
    with pytest.raises(ValueError, match=r"sample.strategy.2.*fewer than the 12"):
        resample.target_counts(COUNTS, "random_over", {2: 11})
    with pytest.raises(ValueError, match=r"sample.strategy.3.*not present"):
        resample.target_counts({1: 5, 2: 9}, "random_under", {3: 1})
    with pytest.raises(ValueError, match="sample.strategy"):
        resample.target_counts(COUNTS, "random_under", "minority")
    with pytest.raises(ValueError, match="sample.strategy"):
        resample.target_counts(COUNTS, "random_under", "bogus")
    with pytest.raises(ValueError, match="at least 2 classes"):
        resample.target_counts({5: 10}, "random_over", "auto")
    assert resample.target_counts(COUNTS, "none", {5: 999}) == COUNTS
    assert resample.target_counts(COUNTS, "class_weight", "auto") == COUNTS


def test_oversampling_is_stratified_replication(spark):
    # auto: every class but 5 raised to 60. Hand-computed: class 2 (12 rows, 48 extra) → every
    # row 4 replicas; class 3 (18 rows, 42 extra) → 6 rows with 3 replicas, 12 rows with 2;
    # class 1 (30 rows, 30 extra) → every row 1; class 4 (25, 35 extra) → 10 rows 2, 15 rows 1.
    targets = resample.target_counts(COUNTS, "random_over", "auto")
    rows = sampled(reviews_frame(spark, COUNTS), "random_over", COUNTS, targets,
                   seed=3).collect()
    per_row = Counter((r.star, r.review_id) for r in rows)
    spread = {star: sorted(Counter(n for (s, _), n in per_row.items() if s == star).items())
              for star in COUNTS}
    assert spread == {1: [(2, 30)], 2: [(5, 12)], 3: [(3, 12), (4, 6)],
                      4: [(2, 15), (3, 10)], 5: [(1, 60)]}
    # copies of a row are numbered 0..k without gaps
    copies: dict[str, list[int]] = {}
    for r in rows:
        copies.setdefault(r.review_id, []).append(r.copy)
    assert all(sorted(c) == list(range(len(c))) for c in copies.values())


@pytest.mark.parametrize("method,strategy", [("random_under", "auto"),
                                             ("random_over", "all"),
                                             ("random_under", {5: 33, 4: 7})])
def test_same_sample_for_any_partitioning(spark, method, strategy):
    targets = resample.target_counts(COUNTS, method, strategy)

    def sample(partitions, seed=11):
        frame = reviews_frame(spark, COUNTS, partitions)
        out = sampled(frame, method, COUNTS, targets, seed=seed)
        return sorted((r.review_id, r.copy) for r in out.collect())

    two, seven = sample(2), sample(7)
    assert two == seven
    assert sample(7, seed=12) != seven     # the seed matters


def test_class_weight_matches_sklearn(spark):
    y = labels(COUNTS)
    classes = np.unique(y)
    reference = dict(zip(classes.tolist(),
                         compute_class_weight("balanced", classes=classes, y=y).tolist()))
    assert resample.balanced_class_weights(COUNTS) == reference
    rows = resample.resample(reviews_frame(spark, COUNTS), "class_weight", COUNTS, COUNTS,
                             seed=1).collect()
    assert len(rows) == sum(COUNTS.values())
    assert all(r.weight == reference[r.star] and r.copy == 0 for r in rows)


# --------------------------------------------------------------------------- ADASYN
def blobs(counts, seed=0):
    rng = np.random.default_rng(seed)
    centres = {0: (0.0, 0.0), 1: (1.5, 0.5), 2: (0.5, 1.5)}
    X = np.vstack([rng.normal(centres[k], 0.8, size=(n, 2)) for k, n in counts.items()])
    return X, labels(counts)


def test_adasyn_under_the_limit():
    from imblearn.over_sampling import ADASYN
    from scipy import sparse
    counts = {0: 120, 1: 40, 2: 25}
    X, y = blobs(counts)
    X_res, y_res = resample.adasyn_resample(X, y, seed=5, strategy="auto", max_rows=1000)
    ref_X, ref_y = ADASYN(random_state=5).fit_resample(X, y)
    np.testing.assert_allclose(X_res, ref_X)
    np.testing.assert_array_equal(y_res, ref_y)
    np.testing.assert_array_equal(X_res[:len(y)], X)       # originals first, unchanged
    got = Counter(y_res.tolist())
    assert got[0] == 120 and all(abs(got[k] - 120) <= 12 for k in (1, 2))  # ADASYN: ≈ target
    # sparse input (TF-IDF rows) stays sparse; a dict aims class 2 only
    X_sp, y_sp = resample.adasyn_resample(sparse.csr_matrix(X), y, seed=5,
                                          strategy={2: 60}, max_rows=1000)
    assert sparse.issparse(X_sp)
    got = Counter(y_sp.tolist())
    assert got[0] == 120 and got[1] == 40 and 50 <= got[2] <= 70
    # nothing to grow: the input comes back as is
    X_same, y_same = resample.adasyn_resample(X, y, seed=5, strategy={1: 40}, max_rows=1000)
    assert X_same is X and len(y_same) == len(y)


def test_adasyn_refuses_above_the_limit():
    X, y = blobs({0: 60, 1: 20})
    with pytest.raises(ValueError, match=r"sample.adasyn_max_rows.*80 rows.*limit 79"):
        resample.adasyn_resample(X, y, seed=1, strategy="auto", max_rows=79)
    with pytest.raises(ValueError, match="sample.strategy"):
        resample.adasyn_resample(X, y, seed=1, strategy="majority", max_rows=100)


# --------------------------------------------------------------------------- stage
# Train per star, with class_rank by hand: ids T<star>_<i> have class_rank i. Ladder size 40 has
# quotas below; 'full' has no entry (all train). Validation/test rows must never appear.
TRAIN = {1: 12, 2: 5, 3: 8, 4: 15, 5: 30}
QUOTA_40 = {1: 7, 2: 3, 3: 4, 4: 8, 5: 18}


@pytest.fixture
def prepared(spark, config_factory):
    cfg = config_factory("ladder.sizes=[40, full]", "sample.size=40")
    rows = [(f"T{s}_{i:02d}", s, f"train {s} {i}", "train", i)
            for s, n in TRAIN.items() for i in range(n)]
    rows += [(f"V{s}_{i}", s, "val", "validation", None) for s in TRAIN for i in range(3)]
    rows += [(f"E{s}_{i}", s, "test", "test", None) for s in TRAIN for i in range(2)]
    frame = spark.createDataFrame(
        rows, "review_id string, star int, text string, split string, class_rank long")

    def write(staging):
        frame.repartition(3).write.parquet(staging + "/reviews")
        return {"ladder": {"40": {str(k): v for k, v in QUOTA_40.items()}}}

    storage.publish(spark, cfg.stage_dir("prepare"), write, {"stage": "prepare"})
    return config_factory


def test_stage_under_sampling(spark, prepared):
    from starscale.stages import sample as stage
    cfg = prepared("ladder.sizes=[40, full]", "sample.size=40", "sample.method=random_under")
    summary = stage.run(spark, cfg)
    out_dir = f"{cfg.stage_dir('sample')}/40_random_under"
    assert summary["output"].endswith("/sample/40_random_under") and not summary["skipped"]
    train = spark.read.parquet(out_dir + "/train")
    assert [(f.name, f.dataType.simpleString()) for f in train.schema.fields] == [
        ("review_id", "string"), ("star", "int"), ("text", "string"), ("weight", "double"),
        ("copy", "int")]
    rows = train.collect()
    # auto under-sampling of the ladder subset: every star down to the minority's 3
    assert sorted(Counter(r.star for r in rows).items()) == [(s, 3) for s in range(1, 6)]
    # only ladder-subset train rows (class_rank < quota), each once
    assert all(r.review_id.startswith("T") and int(r.review_id.split("_")[1]) < QUOTA_40[r.star]
               for r in rows)
    assert len({r.review_id for r in rows}) == 15
    manifest = json.loads(open(out_dir.replace("file:", "") + "/_MANIFEST.json").read())
    assert manifest["class_counts_before"] == {str(k): v for k, v in QUOTA_40.items()}
    assert manifest["class_counts_after"] == {str(s): 3 for s in range(1, 6)}
    assert manifest["class_weights_balanced"] == {str(s): 1.0 for s in range(1, 6)}
    assert stage.run(spark, cfg)["skipped"] is True


def test_stage_class_weight_full_and_adasyn(spark, prepared):
    from starscale.stages import sample as stage
    cfg = prepared("ladder.sizes=[40, full]", "sample.size=full", "sample.method=class_weight")
    summary = stage.run(spark, cfg)
    y = labels(TRAIN)
    reference = compute_class_weight("balanced", classes=np.arange(1, 6), y=y).tolist()
    assert summary["class_weights_balanced"] == {str(s): w for s, w in zip(range(1, 6), reference)}
    rows = spark.read.parquet(f"{cfg.stage_dir('sample')}/full_class_weight/train").collect()
    assert len(rows) == sum(TRAIN.values())
    assert all(r.weight == reference[r.star - 1] and r.copy == 0 for r in rows)

    cfg = prepared("ladder.sizes=[40, full]", "sample.size=40", "sample.method=adasyn")
    summary = stage.run(spark, cfg)
    assert summary["class_counts_after"] == summary["class_counts_before"]
    assert summary["adasyn"]["applied_by"] == "train-lr"
    assert summary["adasyn"]["target_counts"] == {str(s): 18 for s in range(1, 6)}


def test_stage_over_sampling_and_bad_size(spark, prepared):
    from starscale.stages import sample as stage
    cfg = prepared("ladder.sizes=[40, full]", "sample.size=40", "sample.method=random_over",
                   "sample.strategy={2: 9, 3: 10}")
    summary = stage.run(spark, cfg)
    assert summary["class_counts_after"] == {"1": 7, "2": 9, "3": 10, "4": 8, "5": 18}
    assert summary["rows_after"] == 52

    bad = prepared("ladder.sizes=[40, full]", "sample.size=41")
    with pytest.raises(ValueError, match="sample.size"):
        stage.run(spark, bad)
    missing = prepared("ladder.sizes=[40, 50, full]", "sample.size=50")
    with pytest.raises(ValueError, match="sample.size: 50 has no ladder quota"):
        stage.run(spark, missing)
