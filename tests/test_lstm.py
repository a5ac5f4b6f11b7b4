"""The LSTM model, pretrained vectors, save/load, shard assignment and the shard reader."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from starscale import model_store
from tests.helpers import MAX_LEN, synthetic_rows


def test_default_model_is_the_studys():
    from starscale import lstm
    from starscale.config import load_config

    cfg = load_config()
    m = cfg.lstm
    model = lstm.build_model(20000, 100, embedding_dim=m.embedding_dim, units=m.units,
                             layers=m.layers, bidirectional=m.bidirectional,
                             spatial_dropout=m.spatial_dropout, dropout=m.dropout,
                             recurrent_dropout=m.recurrent_dropout,
                             embedding_trainable=m.embedding_trainable)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Embedding", "SpatialDropout1D", "LSTM", "Dense"]
    assert model.get_layer("embedding").trainable
    assert model.get_layer("spatial_dropout").rate == 0.2
    assert model.get_layer("lstm_0").units == 64
    assert model.get_layer("stars").activation.__name__ == "softmax"
    # 20000×300 embedding + 4×(64×(300+64)+64) LSTM + 64×5+5 dense, by hand
    assert model.count_params() == 6_000_000 + 93_440 + 325
    assert (m.learning_rate, m.batch_size, m.class_weight) == (0.001, 128, "balanced")
    lstm.compile_model(model, lstm.make_optimizer(m.learning_rate))
    assert type(model.optimizer).__name__ == "Adam"
    assert model.loss == "categorical_crossentropy"


def test_options_bidirectional_layers_frozen_embedding_and_cudnn_eligibility():
    from starscale import lstm

    model = lstm.build_model(50, 12, embedding_dim=8, units=4, layers=2, bidirectional=True,
                             spatial_dropout=0.0, embedding_trainable=False)
    assert [type(x).__name__ for x in model.layers] == ["InputLayer", "Embedding", "Bidirectional",
                                                         "Bidirectional", "Dense"]
    assert not model.get_layer("embedding").trainable
    # 2 directions × 4×(4×(8+4)+4) and 2 × 4×(4×(8+4)+4) (second layer input 8 = 2×4), dense 8×5+5
    assert model.count_params() == 50 * 8 + 2 * 208 + 2 * 208 + 45
    assert all(x["cudnn_eligible"] for x in lstm.uses_cudnn(model)["layers"])
    slow = lstm.build_model(50, 12, embedding_dim=8, units=4, recurrent_dropout=0.1)
    info = lstm.uses_cudnn(slow)
    assert info["layers"] == [{"layer": "lstm_0", "cudnn_eligible": False}] and not info["cudnn"]


def test_read_vectors_glove_and_fasttext(tmp_path):
    from starscale import lstm

    vocab = ["<pad>", "<oov>", "good", "bad", "meh"]
    glove = ["good 1 2 3", "bad -1 -2 -3", "unused 9 9 9"]
    matrix, found = lstm.read_vectors(glove, vocab, 3, seed=1)
    assert found == 2
    np.testing.assert_array_equal(matrix[2], [1, 2, 3])
    np.testing.assert_array_equal(matrix[3], [-1, -2, -3])
    np.testing.assert_array_equal(matrix[0], [0, 0, 0])
    assert np.abs(matrix[4]).max() > 0 and np.abs(matrix[4]).max() < 0.5   # random OOV row
    again, _ = lstm.read_vectors(glove, vocab, 3, seed=1)
    np.testing.assert_array_equal(matrix, again)
    fasttext = ["3 3", "meh 0.5 0.5 0.5", "good 1 2 3"]
    matrix, found = lstm.read_vectors(fasttext, vocab, 3, seed=1)
    assert found == 2
    np.testing.assert_array_equal(matrix[4], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"vec.txt:2: expected a token and 3 values"):
        lstm.read_vectors(["good 1 2 3", "bad 1 2"], vocab, 3, seed=1, source="vec.txt")


def test_pretrained_frozen_embedding_is_used_and_stays(tmp_path):
    from starscale import lstm

    vocab = ["<pad>", "<oov>", "a", "b"]
    matrix, _ = lstm.read_vectors(["a 1 0", "b 0 1"], vocab, 2, seed=3)
    model = lstm.build_model(4, 5, embedding_dim=2, units=2, embedding_matrix=matrix,
                             embedding_trainable=False, spatial_dropout=0.0)
    lstm.compile_model(model, lstm.make_optimizer(0.1))
    model.fit(np.array([[2, 3, 2, 3, 2]] * 8, np.int32), np.eye(5)[[0] * 8], epochs=2, verbose=0)
    np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0], matrix)
    with pytest.raises(ValueError, match=r"expected \(4, 3\)"):
        lstm.build_model(4, 5, embedding_dim=3, units=2, embedding_matrix=matrix)


def test_save_bundle_and_load_model_rebuilds_it(tmp_path, monkeypatch):
    from tensorflow import keras
    from starscale import lstm

    arch = {"vocab_size": 40, "max_len": MAX_LEN, "embedding_dim": 4, "units": 3, "layers": 1,
            "bidirectional": False, "spatial_dropout": 0.2, "dropout": 0.0,
            "recurrent_dropout": 0.0, "mixed_precision": False,
            "embedding_trainable": True}
    model = lstm.build_model(**arch, seed=5)
    lstm.compile_model(model, lstm.make_optimizer(0.01, clipnorm=1.0))
    out = lstm.save_bundle(model, str(tmp_path / "m"), "<pad>\n<oov>\n", {"lstm": {"units": 3}},
                           arch)
    assert sorted(os.listdir(out)) == ["config.json", "model.json", "vocab.txt", "weights.npz"]
    with open(os.path.join(out, "model.json")) as fh:
        assert json.load(fh) == arch
    # Rebuilt by starscale's code: Keras's deserialiser is never asked to load the bundle.
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: pytest.fail("load_model"))
    loaded = model_store.load_lstm_bundle(out)
    x = np.arange(2 * MAX_LEN, dtype=np.int32).reshape(2, MAX_LEN) % 40
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert lstm.weights_checksum(loaded) == lstm.weights_checksum(model)
    with pytest.raises(ValueError, match="no saved model"):
        model_store.load_lstm_bundle(str(tmp_path / "nothing"))


def test_a_mixed_precision_bundle_is_scored_in_float32(tmp_path):
    """A model trained with lstm.mixed_precision is rebuilt in float32 for scoring (the driver's
    and the executors' CPUs): every layer computes in float32 and the predictions are those of a
    float32 model with the same weights."""
    from starscale import lstm

    arch = {"vocab_size": 40, "max_len": MAX_LEN, "embedding_dim": 4, "units": 3, "layers": 1,
            "bidirectional": False, "spatial_dropout": 0.0, "dropout": 0.0,
            "recurrent_dropout": 0.0, "mixed_precision": True, "embedding_trainable": True}
    trained = lstm.build_model(**arch, seed=5)
    assert trained.get_layer("lstm_0").compute_dtype == "float16"     # as trained on a GPU
    out = lstm.save_bundle(trained, str(tmp_path / "m"), "<pad>\n<oov>\n", {}, arch)
    loaded = model_store.load_lstm_bundle(out)
    assert {layer.compute_dtype for layer in loaded.layers[1:]} == {"float32"}   # [0]: ids
    plain = lstm.build_model(**{**arch, "mixed_precision": False}, seed=6)
    plain.set_weights(trained.get_weights())
    x = np.arange(2 * MAX_LEN, dtype=np.int32).reshape(2, MAX_LEN) % 40
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), plain.predict(x, verbose=0))


def test_assign_shards_and_steps():
    from starscale.training.data import assign_shards, steps_per_epoch

    assert assign_shards([0, 1], 0, 2) == [0] and assign_shards([0, 1], 1, 2) == [1]
    assert assign_shards([0, 1, 2, 3, 4], 1, 2) == [1, 3]
    assert assign_shards([0, 1, 2, 3, 4], 0, 2) == [0, 2, 4]
    with pytest.raises(ValueError, match="encode.shards"):
        assign_shards([0], 0, 2)
    # rank 0: shards 0+2 = 200 rows, rank 1: shard 1 = 130 rows → 130 // 32 = 4 steps
    assert steps_per_epoch({0: 100, 1: 130, 2: 100}, 2, 32) == 4
    with pytest.raises(ValueError, match="fewer than one batch"):
        steps_per_epoch({0: 10}, 1, 32)


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight
    from starscale.training.data import class_weight_list

    y = np.array([0] * 10 + [1] * 5 + [2] * 20 + [3] * 15 + [4] * 50)
    expected = compute_class_weight("balanced", classes=np.arange(5), y=y)
    np.testing.assert_allclose(class_weight_list(np.bincount(y)), expected)


def test_balanced_class_weights_with_an_absent_class_match_sklearn():
    """sklearn's 'balanced' over the classes present (train_lstm's old copy divided by 5 always);
    the absent label gets 1.0, never used."""
    from sklearn.utils.class_weight import compute_class_weight
    from starscale.encode import balanced_class_weights as encode_weights
    from starscale.resample import balanced_class_weights
    from starscale.training.data import class_weight_list

    y = np.array([0] * 10 + [2] * 20 + [3] * 15 + [4] * 50)          # no 2-star rows
    present = np.array([0, 2, 3, 4])
    expected = compute_class_weight("balanced", classes=present, y=y)
    got = class_weight_list(np.bincount(y, minlength=5))
    np.testing.assert_allclose([got[k] for k in present], expected)
    assert got[1] == 1.0
    assert encode_weights is balanced_class_weights                  # one definition


def _write_shard(path: Path, n: int, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = synthetic_rows(n, seed, "r")
    rows["weight"] = np.where(rows["label"] == 4, 0.5, 1.0)
    path.mkdir(parents=True)
    pq.write_table(pa.table({"review_id": rows["review_id"], "label": pa.array(rows["label"], pa.int32()),
                             "weight": rows["weight"],
                             "ids": pa.array(list(rows["ids"]), pa.list_(pa.int32()))}),
                   path / "part-0.parquet", row_group_size=37)
    return rows


def test_train_batches_streams_epochs_reproducibly(tmp_path):
    from starscale.training.data import count_rows, list_shards, train_batches

    seq = tmp_path / "sequences"
    rows = _write_shard(seq / "split=train" / "shard=0", 200, 9)
    shards = list_shards(str(seq), "train")
    assert list(shards) == [0] and count_rows(shards[0], str(seq)) == 200
    cw = [1.0, 2.0, 3.0, 4.0, 5.0]

    def take(start_epoch: int, n: int):
        gen = train_batches(shards[0], str(seq), batch_size=16, steps=12, start_epoch=start_epoch,
                            seed=7, rank=0, shuffle_buffer=64, class_weights=cw, max_len=MAX_LEN)
        return [next(gen) for _ in range(n)]

    two_epochs = take(0, 24)
    resumed = take(1, 12)
    for a, b in zip(two_epochs[12:], resumed):      # epoch 1 is the same after a resume
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    by_ids = {tuple(r): (lab, w) for r, lab, w in zip(rows["ids"], rows["label"], rows["weight"])}
    seen = set()
    for ids, onehot, sw in two_epochs[:12]:
        assert ids.shape == (16, MAX_LEN) and onehot.shape == (16, 5)
        for r, o, s in zip(ids, onehot, sw):
            lab, w = by_ids[tuple(r)]
            assert o.argmax() == lab and s == pytest.approx(cw[lab] * w)
            seen.add(tuple(r))
    assert len(seen) == 12 * 16                    # no row twice within an epoch
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(two_epochs[:12], two_epochs[12:]))


def test_train_batches_read_review_ids_only_for_the_return_ids_hook(tmp_path):
    """Training reads no review_id (the hook that wants them still gets them): a shard written
    without the column trains; asking for the ids names it missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from starscale.training.data import list_shards, train_batches

    seq = tmp_path / "sequences"
    rows = _write_shard(seq / "split=train" / "shard=0", 96, 3)
    files = list_shards(str(seq), "train")[0]
    kwargs = dict(batch_size=16, steps=6, start_epoch=0, seed=1, rank=0, shuffle_buffer=32,
                  class_weights=[1.0] * 5, max_len=MAX_LEN)
    seen: set = set()
    gen = train_batches(files, str(seq), seen_ids=seen, **kwargs)
    with_ids = [next(gen) for _ in range(6)]
    assert seen == set(rows["review_id"])
    pq.write_table(pq.read_table(files[0]).drop(["review_id"]), files[0])
    gen = train_batches(files, str(seq), **kwargs)
    for a, b in zip(with_ids, [next(gen) for _ in range(6)]):   # the same batches without ids
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    with pytest.raises((KeyError, ValueError, pa.ArrowInvalid), match="review_id"):
        next(train_batches(files, str(seq), seen_ids=set(), **kwargs))
