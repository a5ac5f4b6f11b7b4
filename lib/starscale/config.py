"""Configuration: conf/base.yaml + overlays + ``--set a.b=c`` → frozen, validated dataclasses.

Every default lives in ``conf/base.yaml``; the dataclasses below declare only names, types and
ranges, so a key missing from the base file is an error, not a silent second default. Loading
happens before any Spark work, and every error names the full key path (``sample.strategy``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from starscale import layout

CONF_ENV = "STARSCALE_CONF_DIR"


def rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
        hi_open: bool = False) -> dict:
    """Field metadata for a numeric range check (closed unless *_open)."""
    return {"range": (lo, hi, lo_open, hi_open)}


def _f(**meta) -> Any:
    return field(metadata=meta)


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class RunConfig:
    output_dir: str                      # root under which every stage publishes
    seed: int
    name: str


@dataclass(frozen=True)
class SparkConfig:
    master: str | None                   # null: whatever spark-submit set
    app_name: str
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"]
    python: str | None                   # executors' interpreter (PYSPARK_PYTHON); null: this one
    conf: dict[str, str]


@dataclass(frozen=True)
class DirtConfig:
    html_entity: float = _f(**rng(0, 1))
    line_break: float = _f(**rng(0, 1))
    url: float = _f(**rng(0, 1))
    video_tag: float = _f(**rng(0, 1))
    empty_body: float = _f(**rng(0, 1))
    extra_field: float = _f(**rng(0, 1))
    bad_star: float = _f(**rng(0, 1))
    duplicate_id: float = _f(**rng(0, 1))


@dataclass(frozen=True)
class CorpusConfig:
    rows: int = _f(**rng(1))
    seed: int = _f()
    partitions: int = _f(**rng(1))       # generation parallelism; bytes do not depend on it
    part_files: int = _f(**rng(1))
    gzip: bool = _f()
    label_noise: float = _f(**rng(0, 1))
    star_mix: list[float] = _f()
    dirt: DirtConfig = _f()

    def validate(self, path: str) -> None:
        if len(self.star_mix) != 5 or any(p < 0 for p in self.star_mix):
            raise ValueError(f"{path}.star_mix: need 5 non-negative shares, got {self.star_mix}")
        if abs(sum(self.star_mix) - 1.0) > 1e-6:
            raise ValueError(f"{path}.star_mix: shares must sum to 1, got {sum(self.star_mix):.6f}")


@dataclass(frozen=True)
class IngestConfig:
    inputs: list[str]                    # files, dirs or globs; empty: the synthetic corpus
    format: Literal["tsv", "jsonl", "parquet"]
    max_rejected_share: float = _f(**rng(0, 1))


@dataclass(frozen=True)
class CleanConfig:
    remove_stopwords: bool
    lemmatize: bool


@dataclass(frozen=True)
class SplitConfig:
    train: float = _f(**rng(0, 1, lo_open=True))
    validation: float = _f(**rng(0, 1))
    test: float = _f(**rng(0, 1, lo_open=True))
    seed: int = _f()

    def validate(self, path: str) -> None:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"{path}: train + validation + test must be 1, got {total:.6f}")


@dataclass(frozen=True)
class LadderConfig:
    sizes: list[int | Literal["full"]]  # a size above the train split is clipped to full
    seed: int

    def validate(self, path: str) -> None:
        if not self.sizes:
            raise ValueError(f"{path}.sizes: need at least one size (an integer or 'full')")
        for i, size in enumerate(self.sizes):
            if isinstance(size, int) and size < 1:
                raise ValueError(f"{path}.sizes[{i}]: {size} is out of range (must be >= 1)")
        if len(set(map(str, self.sizes))) != len(self.sizes):
            raise ValueError(f"{path}.sizes: repeated size in {self.sizes}")


@dataclass(frozen=True)
class SampleConfig:
    size: int | Literal["full"]          # which ladder subset of train to resample
    method: Literal["none", "random_under", "random_over", "class_weight", "adasyn"]
    strategy: str | dict[int, int]       # 'auto' | 'majority' | 'not minority' | 'not majority' | 'all' | {star: n}
    seed: int
    adasyn_max_rows: int = _f(**rng(1))
    replicate: int = _f(**rng(0))        # seed replicate (experiment.seeds); > 0: tags end in _r<k>

    def validate(self, path: str) -> None:
        named = ("auto", "majority", "not minority", "not majority", "all")
        if isinstance(self.strategy, str) and self.strategy not in named:
            raise ValueError(f"{path}.strategy: {self.strategy!r} is not one of {named} or a dict")
        if isinstance(self.size, int) and self.size < 1:
            raise ValueError(f"{path}.size: {self.size} is out of range (must be >= 1 or 'full')")
        if isinstance(self.strategy, dict):
            for star, n in self.strategy.items():
                if star not in (1, 2, 3, 4, 5) or n < 0:
                    raise ValueError(f"{path}.strategy.{star}: need star in 1..5 and count >= 0")


@dataclass(frozen=True)
class EncodeConfig:
    vocab_size: int = _f(**rng(3))
    min_count: int = _f(**rng(1))
    max_len: int = _f(**rng(1))
    padding: Literal["pre", "post"] = _f()
    truncating: Literal["pre", "post"] = _f()
    shards: int = _f(**rng(1))
    tfidf_features: int = _f(**rng(1))
    tfidf_ngram_max: int = _f(**rng(1, 3))
    tfidf_hashed: bool = _f()
    seed: int = _f()                      # order of train rows before sharding



@dataclass(frozen=True)
class LRConfig:
    engine: Literal["mllib", "sklearn"]
    reg_param: float | None = _f(**rng(0))  # MLlib regParam; null: 1/(C·Σweights), sklearn's objective
    elastic_net: float = _f(**rng(0, 1))  # MLlib elasticNetParam
    C: float = _f(**rng(0, lo_open=True))  # scikit-learn inverse regularization
    max_iter: int = _f(**rng(1))
    sklearn_max_rows: int = _f(**rng(1))  # scikit-learn collects features to the driver
    class_weight: Literal["balanced", "none"] = _f()  # balanced: the study's class_weight='balanced'
    reg_grid: list[float] = _f()          # MLlib regParams tried, chosen by validation score; []: reg_param / C only

    def validate(self, path: str) -> None:
        for i, value in enumerate(self.reg_grid):
            if not (isinstance(value, (int, float)) and value > 0 and value != float("inf")):
                raise ValueError(f"{path}.reg_grid[{i}]: {value!r} is out of range (must be a "
                                 f"finite number > 0)")
        if len(set(self.reg_grid)) != len(self.reg_grid):
            raise ValueError(f"{path}.reg_grid: repeated value in {self.reg_grid}")


@dataclass(frozen=True)
class LSTMConfig:
    embedding_dim: int = _f(**rng(1))
    embedding_trainable: bool = _f()
    pretrained_vectors: str | None = _f()  # GloVe/fastText text file; null: random init
    units: int = _f(**rng(1))
    layers: int = _f(**rng(1))
    bidirectional: bool = _f()
    spatial_dropout: float = _f(**rng(0, 1, hi_open=True))
    dropout: float = _f(**rng(0, 1, hi_open=True))
    recurrent_dropout: float = _f(**rng(0, 1, hi_open=True))  # > 0 disables cuDNN on GPU
    learning_rate: float = _f(**rng(0, lo_open=True))  # Adam's rate at an effective batch of learning_rate_batch
    learning_rate_batch: int = _f(**rng(1))  # rows per optimizer step (all ranks) learning_rate is set for
    clipnorm: float | None = _f()
    batch_size: int = _f(**rng(1))
    epochs: int = _f(**rng(1))
    min_steps: int = _f(**rng(0))         # planned epochs are raised to reach this many steps (early stopping may end sooner)
    class_weight: Literal["balanced", "none"] = _f()
    early_stopping_patience: int = _f(**rng(0))
    monitor: Literal["val_score", "val_loss"] = _f()  # best epoch / early stopping on this
    variant: str | None = _f()            # set by the experiment (experiment.lstm_units): tag suffix
    mixed_precision: bool = _f()
    deterministic: bool = _f()            # tf op determinism (slower; for resume tests)
    shuffle_buffer: int = _f(**rng(0))


@dataclass(frozen=True)
class TrainConfig:
    workers: int = _f(**rng(1))           # Horovod processes
    launcher: Literal["spark", "horovodrun", "local"] = _f()
    scale_lr: bool = _f()                 # lstm.learning_rate × √(effective batch / lstm.learning_rate_batch)
    warmup_epochs: int = _f(**rng(0))
    start_timeout_s: int = _f(**rng(1))
    stall_timeout_s: int = _f(**rng(1))   # no step progress for this long → fail
    failure_grace_s: int = _f(**rng(1))   # a rank failed: the rest get this long to exit, then the job is cancelled
    use_gpu: bool = _f()
    gpu_drill: bool = _f()                # use_gpu's scheduling on CPU hosts: ranks take Spark's GPU address, TF stays on the CPU
    nics: list[str] = _f()                # horovod.spark.run nics (e.g. [lo]); []: Horovod picks
    bind_host: str | None = _f()          # Horovod services listen here only (starscale.loopback); null: all


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap: int = _f(**rng(0))         # resamples for the 95% interval
    seed: int = _f()
    model: Literal["lr", "lstm"] = _f()   # which saved model the evaluate stage re-scores
    model_dir: str | None = _f()          # null: models/lr_<lr.engine>/<tag> or models/lstm/<tag>


@dataclass(frozen=True)
class PredictConfig:
    model: Literal["lr", "lstm"] = _f()
    model_dir: str | None = _f()          # null: models/lr_<lr.engine>/<tag> or models/lstm/<tag>
    input: str | None = _f()              # reviews Parquet folder or TSV file/glob; null: prepare/reviews
    input_format: Literal["auto", "parquet", "tsv"] = _f()
    output: str | None = _f()             # null: <run.output_dir>/predict/<model>_<tag>
    batch_size: int = _f(**rng(1))        # LSTM rows per Keras predict call


@dataclass(frozen=True)
class ReportConfig:
    plateau_min_gain: float = _f(**rng(0))  # score gained per doubling of train rows below which a curve has plateaued
    bootstrap: int = _f(**rng(1))          # paired-bootstrap resamples for the verdict's 95% interval
    seed: int = _f()
    alpha: float = _f(**rng(0, 1, lo_open=True, hi_open=True))  # 0.05: 95% intervals
    include_study_points: bool = _f()      # draw the earlier study's scores on the learning curve
    sampling_size: int | Literal["full"] | None = _f()  # size of the sampler comparison; null: the size with most samplers
    margin: float = _f(**rng(0))           # decision rule: |LSTM − LR| interval must clear this
    decide_on: Literal["raw", "offsets"] = _f()  # the pre-registered basis of the verdict

    def validate(self, path: str) -> None:
        if isinstance(self.sampling_size, int) and self.sampling_size < 1:
            raise ValueError(f"{path}.sampling_size: {self.sampling_size} is out of range "
                             f"(must be >= 1, 'full' or null)")


@dataclass(frozen=True)
class LRFeaturesConfig:
    """One TF-IDF feature setting of the LR grid (→ encode.tfidf_features / tfidf_hashed)."""
    features: int = _f(**rng(1))
    hashed: bool = _f()


@dataclass(frozen=True)
class ExperimentConfig:
    """The grid of the experiment job: sizes × samplers × models (× LR engines × LR features)."""
    sizes: list[int | Literal["full"]] | None  # ladder sizes to train on; null: ladder.sizes
    samplers: list[Literal["none", "random_under", "random_over", "class_weight", "adasyn"]]
    models: list[Literal["lr", "lstm"]]
    lr_engines: list[Literal["mllib", "sklearn"]]
    lr_features: list[LRFeaturesConfig]     # the LSTM uses the first setting's encode output
    seeds: int | Literal["auto"] = _f()     # replicates of the selected cells at the largest size; auto: 5, then the top-up rule
    seed_half_width: float = _f(**rng(0, lo_open=True))  # seeds auto: target half-width h of the seed part of a mean's interval
    max_seeds: int = _f(**rng(1))           # seeds auto: at most this many replicates per cell
    lstm_units: list[int] | None = _f()     # LSTM widths in the grid (chosen on validation); null: lstm.units
    lstm_learning_rates: list[float] | None = _f()  # LSTM learning rates (per rank) in the grid; null: lstm.learning_rate
    tuning_size: int | Literal["full"] | None = _f()  # the LSTM grid runs at this size, its choice carried to the others; null: every size

    def validate(self, path: str) -> None:
        for name in ("samplers", "models", "lr_engines", "lr_features"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{path}.{name}: need at least one entry")
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"{path}.{name}: repeated entry in {values}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"{path}.seeds: {self.seeds} is out of range (must be >= 1 or auto)")
        if self.lstm_learning_rates is not None:
            rates = self.lstm_learning_rates
            if not rates or any(r <= 0 for r in rates) or len(set(rates)) != len(rates):
                raise ValueError(f"{path}.lstm_learning_rates: need distinct rates > 0, or null "
                                 f"(got {rates})")
        if self.lstm_units is not None:
            if not self.lstm_units or any(u < 1 for u in self.lstm_units) \
                    or len(set(self.lstm_units)) != len(self.lstm_units):
                raise ValueError(f"{path}.lstm_units: need distinct widths >= 1, or null "
                                 f"(got {self.lstm_units})")
        if self.sizes is not None:
            if not self.sizes:
                raise ValueError(f"{path}.sizes: need at least one size, or null for ladder.sizes")
            if len(set(map(str, self.sizes))) != len(self.sizes):
                raise ValueError(f"{path}.sizes: repeated size in {self.sizes}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of every trained run (logged by the experiment job, never by a rank)."""
    enabled: bool
    mlflow_uri: str | None                # null: file:<run.output_dir>/mlruns (local output only)
    experiment_name: str | None           # null: run.name


@dataclass(frozen=True)
class ClusterConfig:
    """A Spark standalone cluster on this host (make cluster-up), for tests of cluster mode."""
    run_dir: str                          # logs, pid files, work dirs
    host: Literal["127.0.0.1"]            # loopback only: never bind a test cluster elsewhere
    master_port: int = _f(**rng(1024, 65535))
    master_webui_port: int = _f(**rng(1024, 65535))
    workers: int = _f(**rng(1))
    worker_cores: int = _f(**rng(1))
    worker_memory: str = _f()
    start_timeout_s: int = _f(**rng(1))
    # make cluster-up HOSTS=N: separate hosts in network namespaces (starscale.hosts)
    hosts: int = _f(**rng(0))             # 0: the loopback cluster above; >= 3: master + N-1 worker hosts
    hosts_dir: str = _f()                 # the hosts' folders and shared storage, outside the checkout
    subnet: str = _f()                    # the private /24 the hosts share
    prefix: str = _f()                    # names of the namespaces, veths and the bridge
    gpus_per_host: int = _f(**rng(0))     # fake GPUs each worker host offers (GPU scheduling drill)

    def validate(self, path: str) -> None:
        import re
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.prefix):
            raise ValueError(f"{path}.prefix: {self.prefix!r} must be 1-6 lowercase letters or "
                             f"digits, starting with a letter (interface names are short)")
        import ipaddress
        try:
            net = ipaddress.ip_network(self.subnet, strict=True)
        except ValueError as exc:
            raise ValueError(f"{path}.subnet: {self.subnet!r} is not a network ({exc})") from None
        if net.version != 4 or net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"{path}.subnet: {self.subnet} must be a private IPv4 /24")
        if self.hosts in (1, 2):
            raise ValueError(f"{path}.hosts: {self.hosts}; 0 (loopback cluster) or >= 3 "
                             f"(a master and at least two worker hosts)")


@dataclass(frozen=True)
class Config:
    run: RunConfig
    spark: SparkConfig
    corpus: CorpusConfig
    ingest: IngestConfig
    clean: CleanConfig
    split: SplitConfig
    ladder: LadderConfig
    sample: SampleConfig
    encode: EncodeConfig
    cluster: ClusterConfig
    lr: LRConfig
    lstm: LSTMConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    predict: PredictConfig
    report: ReportConfig
    experiment: ExperimentConfig
    tracking: TrackingConfig

    def sample_tag(self) -> str:
        """Folder name of one (ladder size, sampler) cell: e.g. '50000_random_under'."""
        replicate = f"_r{self.sample.replicate}" if self.sample.replicate else ""
        return f"{self.sample.size}_{self.sample.method}{replicate}"

    def lstm_tag(self) -> str:
        """Folder name of one LSTM: the sample cell, plus lstm.variant (e.g. 'u128') when the
        experiment trains more than one width."""
        return self.sample_tag() + (f"_{self.lstm.variant}" if self.lstm.variant else "")

    def encode_tag(self) -> str:
        """Folder name of one encoding: the sample cell plus the TF-IDF feature setting, so the
        study's 4k top-count features and 2^20 hashed features live side by side."""
        kind = "hash" if self.encode.tfidf_hashed else "top"
        return f"{self.sample_tag()}_{kind}{self.encode.tfidf_features}"

    def encode_dir(self) -> str:
        return layout.encode_dir(self)

    def sample_dir(self) -> str:
        return layout.sample_dir(self)

    def to_dict(self) -> dict:
        """The config as plain data, secrets redacted (redact_secrets): this is what manifests,
        model bundles, the report and MLflow write. Code that needs a secret reads the field."""
        return redact_secrets(dataclasses.asdict(self))

    def section_hash(self, *names: str) -> str:
        """Stable hash of the named sections: what a stage's output depends on."""
        blob = json.dumps({n: dataclasses.asdict(getattr(self, n)) for n in names},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def stage_dir(self, stage: str) -> str:
        """Where a stage publishes: <run.output_dir>/<stage> (starscale.layout names the rest)."""
        return layout.stage_dir(self.run.output_dir, stage)


# --------------------------------------------------------------------------- secrets
REDACTED = "***redacted***"
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential")


def is_secret_key(name: str) -> bool:
    """A key whose name says it holds a secret: any part (split at . _ - and camelCase) that
    contains secret / password / passwd / token / credential, or is or ends in 'key' / 'keyfile'
    (fs.s3a.access.key, fs.azure.account.key.<acct>, spark.ssl.keyPassword, *.apiKey)."""
    import re
    parts = [p.lower() for p in re.split(r"[._\-]|(?<=[a-z0-9])(?=[A-Z])", str(name)) if p]
    return any(any(w in p for w in _SECRET_WORDS) or p.endswith(("key", "keyfile"))
               for p in parts)


def redact_secrets(data: Any) -> Any:
    """A copy of data (dicts, lists, scalars) with the value of every secret key replaced."""
    if isinstance(data, dict):
        return {k: (REDACTED if is_secret_key(k) and data[k] not in (None, "") else
                    redact_secrets(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_secrets(v) for v in data]
    return data


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as it may be logged: the value of every secret key replaced, whether
    given as KEY=VALUE (--set spark.conf.fs.s3a.secret.key=..., --conf k=v, --password=...)
    or as a flag followed by its value (--password VALUE)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, eq, value = str(arg).partition("=")
        if eq and value and is_secret_key(name.lstrip("-")):
            out.append(f"{name}={REDACTED}")
        else:
            out.append(arg)
            hide_next = not eq and arg.startswith("-") and is_secret_key(arg.lstrip("-"))
    return out


# --------------------------------------------------------------------------- loading
def conf_dir() -> Path | None:
    """The conf/ folder on disk: $STARSCALE_CONF_DIR or the repo's conf/; None when running
    from the --py-files zip, where base.yaml is read as package data instead."""
    if os.environ.get(CONF_ENV):
        return Path(os.environ[CONF_ENV])
    repo_conf = Path(__file__).resolve().parent.parent.parent / "conf"
    return repo_conf if (repo_conf / "base.yaml").is_file() else None


def _base_yaml() -> tuple[str, str]:
    """(text, where) of base.yaml: from conf_dir(), else the copy packed into starscale/conf/."""
    folder = conf_dir()
    if folder is not None:
        path = folder / "base.yaml"
        if not path.is_file():
            raise ValueError(f"config file not found: {path} (from ${CONF_ENV})")
        return path.read_text(), str(path)
    from importlib import resources
    packed = resources.files("starscale") / "conf" / "base.yaml"
    try:
        return packed.read_text(), "starscale/conf/base.yaml (packaged)"
    except (FileNotFoundError, NotADirectoryError, OSError):
        raise ValueError("conf/base.yaml not found: not in the repo, not packaged with starscale "
                         f"(build the zip with `make package`), and ${CONF_ENV} unset") from None


def _parse_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    return _parse_yaml(path.read_text(), str(path))


def _merge(base: dict, over: dict, path: str, source: str) -> dict:
    out = dict(base)
    for key, val in over.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in base:
            raise ValueError(f"{source}: unknown key {key_path!r}")
        if isinstance(base[key], dict) and isinstance(val, dict):
            if key_path in _FREE_DICTS:       # keys are data: overlay adds or replaces keys
                out[key] = {**base[key], **val}
            elif key_path in _REPLACED_DICTS:  # a value that happens to be a mapping
                out[key] = val
            else:
                out[key] = _merge(base[key], val, key_path, source)
        else:
            out[key] = val
    return out


# Mappings whose keys are data, not schema: an overlay may add keys there.
_FREE_DICTS = ("spark.conf",)
# Values that may be a mapping or a scalar: an overlay replaces them whole.
_REPLACED_DICTS = ("sample.strategy",)


def _is_free_dict(key_path: str) -> bool:
    return key_path in _FREE_DICTS or key_path in _REPLACED_DICTS


def parse_set(item: str) -> tuple[list[str], Any]:
    """'a.b=c' → (['a','b'], yaml-parsed c)."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set corpus.rows=1000")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_set(data: dict, keys: list[str], value: Any, item: str) -> None:
    node = data
    for i, key in enumerate(keys):
        parent = ".".join(keys[:i])
        if parent in _FREE_DICTS:          # spark.conf.spark.x.y=z: the rest is one key
            node[".".join(keys[i:])] = value
            return
        key_path = ".".join(keys[: i + 1])
        if not isinstance(node, dict):
            raise ValueError(f"--set {item}: {parent!r} is not a section")
        if key not in node and not _is_free_dict(parent):
            raise ValueError(f"--set {item}: unknown key {key_path!r}")
        if i == len(keys) - 1:
            node[key] = value
        else:
            node = node[key]


def _check(tp: Any, value: Any, path: str) -> Any:
    """Check value against type tp; return it converted (int→float, lists→lists)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{path}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _check(arm, value, path)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{path}: {value!r} fits none of the allowed types ({'; '.join(errors)})")
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{path}: expected null, got {value!r}")
        return None
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (arm,) = typing.get_args(tp)
        return [_check(arm, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        ktp, vtp = typing.get_args(tp)
        return {_check(ktp, k, f"{path}.{k}"): _check(vtp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        if value != value or value in (float("inf"), float("-inf")):    # NaN passes every range
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return str(value)
    raise TypeError(f"{path}: unsupported config type {tp!r}")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ValueError(f"unknown key {f'{path}.{key}' if path else key!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            raise ValueError(f"missing key {key_path!r} (every default belongs in conf/base.yaml)")
        value = _check(hints[f.name], data[f.name], key_path)
        lo, hi, lo_open, hi_open = f.metadata.get("range", (None, None, False, False))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if lo is not None and (value < lo or (lo_open and value == lo)):
                raise ValueError(f"{key_path}: {value} is out of range (must be {'>' if lo_open else '>='} {lo})")
            if hi is not None and (value > hi or (hi_open and value == hi)):
                raise ValueError(f"{key_path}: {value} is out of range (must be {'<' if hi_open else '<='} {hi})")
        kwargs[f.name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(path)
    return obj


def load_config(conf_files: list[str] | None = None, overrides: list[str] | None = None,
                base: Path | None = None) -> Config:
    """base.yaml, then each overlay in order (later wins), then each KEY=VALUE override."""
    data = _read_yaml(base) if base is not None else _parse_yaml(*_base_yaml())
    for conf_file in conf_files or []:
        data = _merge(data, _read_yaml(Path(conf_file)), "", str(conf_file))
    for item in overrides or []:
        keys, value = parse_set(item)
        _apply_set(data, keys, value, item)
    _spark_conf_strings(data)
    return _executors_for_gpu_ranks(_build(Config, data, ""))


def _executors_for_gpu_ranks(cfg: Config) -> Config:
    """With Spark's GPU scheduling on (spark.task.resource.gpu.amount) and the ranks as Spark
    tasks, every rank takes one GPU task slot, so the executors must offer exactly
    train.workers GPUs: on YARN and Kubernetes spark.executor.instances defaults to 2, and ranks
    past those slots wait out train.start_timeout_s. Left out, spark.executor.instances is
    derived (train.workers / GPUs per executor); given, it must match."""
    conf = cfg.spark.conf
    task_key, executor_key = "spark.task.resource.gpu.amount", "spark.executor.resource.gpu.amount"
    if task_key not in conf or cfg.train.launcher != "spark":
        return cfg
    if conf[task_key] != "1":
        raise ValueError(f"spark.conf.{task_key}: {conf[task_key]!r}, but each Horovod rank needs a "
                         f"GPU of its own: set it to \"1\"")
    gpus = conf.get(executor_key)
    if gpus is None or not gpus.isdigit() or int(gpus) < 1:
        raise ValueError(f"spark.conf.{executor_key}: {gpus!r}, but {task_key} asks each task for a "
                         f"GPU: set the GPUs each executor offers (a whole number >= 1)")
    workers, per_executor = cfg.train.workers, int(gpus)
    if workers % per_executor:
        raise ValueError(f"train.workers: {workers} ranks do not fill executors of {per_executor} "
                         f"GPUs (spark.conf.{executor_key}): make it a multiple")
    executors = workers // per_executor
    given = conf.get("spark.executor.instances")
    if given is None:
        spark = dataclasses.replace(cfg.spark, conf={**conf, "spark.executor.instances": str(executors)})
        return dataclasses.replace(cfg, spark=spark)
    if given != str(executors):
        raise ValueError(f"spark.conf.spark.executor.instances: {given!r} executors x {per_executor} "
                         f"GPU(s) do not match train.workers = {workers} (one GPU per Horovod rank): "
                         f"set it to {executors}, or leave it out to derive it")
    return cfg


def _spark_conf_strings(data: dict) -> None:
    """spark.conf values as Spark reads them: YAML's true/false (from a file or --set
    spark.conf.spark.eventLog.enabled=true) become "true"/"false"; numbers are str()'d by the
    type check. Other values (null, lists) stay and are refused there with the full key."""
    conf = (data.get("spark") or {}).get("conf") if isinstance(data.get("spark"), dict) else None
    if isinstance(conf, dict):
        for key, value in conf.items():
            if isinstance(value, bool):
                conf[key] = "true" if value else "false"


def section_from_dict(cls: type, data: dict, path: str) -> Any:
    """One validated config section (e.g. LSTMConfig) from its to_dict() form, for a process
    that gets the section as JSON (a horovodrun rank)."""
    return _build(cls, data, path)


if __name__ == "__main__":
    # `python -m starscale.config --redact-argv CMD...`: the command line as it may be shown
    # (make full-data-train echoes its spark-submit this way).
    import shlex
    import sys
    if sys.argv[1:2] != ["--redact-argv"]:
        raise SystemExit("usage: python -m starscale.config --redact-argv CMD...")
    print(shlex.join(redact_argv(sys.argv[2:])))
