"""Which GPU a rank trains on, whether the LSTM can take the cuDNN kernel, and the driver off GPUs.

- gpu_for_rank(use_gpu, local_rank, physical, task_gpus) → the GPU a rank pins (pure; tested with a
  faked task context): under horovod.spark.run the address Spark's scheduler gave the task
  (TaskContext.resources()["gpu"], relayed by Horovod), under horovodrun / local the local rank.
- spark_task_gpus() → that address list, or None outside a Spark task.
- pin_gpu(...) → only that GPU visible to TF; fails with one line naming the rank when it cannot
  (TF sees no GPU: which CUDA library does not load, gpu_library_problems; the visible set cannot
  be changed any more). check_nccl(...) → fails when Horovod was built without NCCL.
- cudnn_problems(...) / check_cudnn_eligible(lstm_cfg) → why Keras would leave the fused cuDNN
  kernel (recurrent_dropout, activations, unroll, use_bias), as a ValueError naming the lstm.* key.
- hide_gpus_in_driver() → the driver process sees no GPU (it only loads the trained model and
  scores the test split: without this TF reserves every GPU's memory on a GPU host).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

NO_GPU = "train.use_gpu is true but TensorFlow sees no GPU in this process"


@dataclass(frozen=True)
class GpuChoice:
    """The device a rank uses: index into TF's physical GPU list (None: CPU) and why."""
    index: int | None
    source: str                          # "spark task resources" | "horovod local rank" | "cpu"
    address: str | None = None           # the Spark GPU address, when Spark assigned one

    def describe(self) -> str:
        if self.index is None:
            return f"CPU ({self.source})"
        extra = f", Spark address {self.address}" if self.address is not None else ""
        return f"GPU {self.index} ({self.source}{extra})"


def gpu_for_rank(use_gpu: bool, local_rank: int, physical: int,
                 task_gpus: list[str] | None, cuda_visible: str | None = None,
                 drill: bool = False) -> GpuChoice:
    """The GPU this rank pins. physical: how many GPUs TF lists in this process; task_gpus: the
    Spark task's GPU addresses (None outside a Spark task / when Spark schedules no GPUs);
    cuda_visible: $CUDA_VISIBLE_DEVICES (Spark addresses are physical ids; when the executor
    already narrowed the visible set, an address is mapped to its position in that list).
    drill (train.gpu_drill): the rank takes its GPU address as on a GPU cluster (Spark's, else
    the local rank) but TensorFlow stays on the CPU: GPU scheduling drilled on CPU hosts.
    Raises ValueError when use_gpu is on and no GPU can be chosen."""
    if not use_gpu:
        return GpuChoice(None, "train.use_gpu is false")
    if drill:
        if task_gpus and len(task_gpus) != 1:
            raise ValueError(f"train.use_gpu: this Spark task was given {len(task_gpus)} GPUs "
                             f"{task_gpus}; set spark.task.resource.gpu.amount to 1 (one GPU per "
                             f"Horovod rank, conf/gpu.yaml)")
        if task_gpus:
            return GpuChoice(None, "GPU drill, TensorFlow on the CPU", task_gpus[0].strip())
        return GpuChoice(None, "GPU drill (horovod local rank), TensorFlow on the CPU",
                         str(local_rank))
    if physical < 1:
        raise ValueError(f"{NO_GPU} (tensorflow-cpu installed? run `make doctor`; CUDA driver "
                         f"missing? set train.use_gpu=false to train on CPUs)")
    if task_gpus:
        if len(task_gpus) != 1:
            raise ValueError(f"train.use_gpu: this Spark task was given {len(task_gpus)} GPUs "
                             f"{task_gpus}; set spark.task.resource.gpu.amount to 1 (one GPU per "
                             f"Horovod rank, conf/gpu.yaml)")
        address = task_gpus[0].strip()
        visible = [v.strip() for v in cuda_visible.split(",")] if cuda_visible else None
        if visible and address in visible:
            index = visible.index(address)
        else:
            try:
                index = int(address)
            except ValueError:
                raise ValueError(f"train.use_gpu: Spark GPU address {address!r} is not a device "
                                 f"number (check the discovery script, "
                                 f"spark.executor.resource.gpu.discoveryScript)") from None
        if not 0 <= index < physical:
            raise ValueError(f"train.use_gpu: Spark assigned GPU {address} but this process sees "
                             f"{physical} GPU(s) (CUDA_VISIBLE_DEVICES={cuda_visible!r})")
        return GpuChoice(index, "spark task resources", address)
    # horovodrun (or horovod.spark.run without GPU scheduling): one GPU per local rank.
    if local_rank >= physical:
        raise ValueError(f"train.use_gpu: local rank {local_rank} but only {physical} GPU(s) on "
                         f"this host; start at most {physical} ranks per host (train.workers)")
    return GpuChoice(local_rank, "horovod local rank")


def spark_task_gpus() -> list[str] | None:
    """The GPU addresses Spark's scheduler gave the task this rank belongs to, or None outside
    Spark (horovodrun, local) or when the task has no GPU resource. Under horovod.spark.run the
    rank is a child process of the Spark task: Horovod fetches the task's
    TaskContext.resources() from its task service (horovod.spark.task.get_available_devices);
    code running in the task itself reads TaskContext directly."""
    try:
        from horovod.spark.task import get_available_devices
        addresses = list(get_available_devices() or [])
    except ImportError:
        addresses = []
    if addresses:
        return addresses
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    ctx = TaskContext.get()
    gpu = (ctx.resources() or {}).get("gpu") if ctx is not None else None
    return list(gpu.addresses) if gpu is not None and gpu.addresses else None


def pin_gpu(use_gpu: bool, local_rank: int, where: str, drill: bool = False,
            handed: str | None = None) -> GpuChoice:
    """Make exactly the chosen GPU visible to TF in this process (memory growth on), or none;
    log the choice. Must run before the process's first TF op. where: "rank R/N", the start of
    every error line. drill (train.gpu_drill): TF stays on the CPU, no GPU needed. handed: a GPU
    address given in place of the Spark task's (the gpu_address test hook)."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if use_gpu and not drill and not gpus:
        # TF logs why only as a warning ("Cannot dlopen some GPU libraries"), which the executors'
        # TF_CPP_MIN_LOG_LEVEL=2 hides: name the library here.
        raise ValueError(f"{where}: {NO_GPU}: {no_gpu_reason()}")
    choice = gpu_for_rank(use_gpu, local_rank, len(gpus),
                          [handed] if handed is not None else spark_task_gpus(),
                          os.environ.get("CUDA_VISIBLE_DEVICES"), drill=drill)
    wanted = [gpus[choice.index]] if choice.index is not None else []
    try:
        if choice.index is not None:
            tf.config.experimental.set_memory_growth(wanted[0], True)
        if gpus:
            tf.config.set_visible_devices(wanted, "GPU")
    except RuntimeError as exc:
        # TF was initialised in this process already (the local launcher trains in the driver's
        # process): fine if it already sees exactly the wanted GPUs, else this rank would train
        # on another device than the one it was given (and share it).
        if [d.name for d in tf.config.get_visible_devices("GPU")] != [d.name for d in wanted]:
            raise ValueError(f"{where}: cannot make {choice.describe()} its only GPU: "
                             f"TensorFlow was initialised in this process before "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from None
    print(f"starscale train: {where} on {choice.describe()}", file=sys.stderr, flush=True)
    return choice


def check_unique_gpus(placements: list[dict]) -> None:
    """Every (host, GPU) pair taken by one rank only; ValueError naming the ranks, host and GPU
    otherwise (executors that are not GPU-isolated, e.g. YARN without GPU isolation, offer every
    GPU to every executor). placements: every rank's {"rank", "host", "gpu"} (allgathered)."""
    seen: dict[tuple[str, str], int] = {}
    clashes = []
    for entry in sorted(placements, key=lambda e: e["rank"]):
        if entry.get("gpu") is None:
            continue
        key = (str(entry["host"]), str(entry["gpu"]))
        if key in seen:
            clashes.append(f"ranks {seen[key]} and {entry['rank']} both have GPU {key[1]} on "
                           f"host {key[0]}")
        else:
            seen[key] = entry["rank"]
    if clashes:
        raise ValueError("train.use_gpu: " + "; ".join(clashes) + ": each Horovod rank needs a "
                         "GPU of its own (isolate GPUs per executor: YARN GPU isolation, "
                         "Kubernetes device plugin, standalone spark.worker.resource.gpu.*)")


def check_nccl(use_gpu: bool, nccl_built: bool, where: str) -> None:
    """With train.use_gpu, refuse a Horovod built without NCCL: its GPU allreduce would fall
    back to copying every gradient through host memory (Gloo)."""
    if use_gpu and not nccl_built:
        raise ValueError(f"{where}: train.use_gpu is true but Horovod was built without NCCL "
                         f"(hvd.nccl_built() is false): install the GPU stack (`make setup-gpu`: "
                         f"HOROVOD_GPU_OPERATIONS=NCCL; `make doctor GPU=1` must say "
                         f"horovod_nccl true) or set train.use_gpu=false")


# --------------------------------------------------------------------------- no GPU: why
# The libraries TF's GPU device loads at start (tsl/platform/default/dso_loader.cc), as
# lib<name>.so.<version>: the version is the CUDA major for most, other series for two. In
# dependency order (each loaded globally, so the next finds what it needs already loaded), with
# nvJitLink, which CUDA 12's cusparse and cusolver need.
CUDA_LIBRARIES = ("cudart", "cublasLt", "cublas", "nvJitLink", "cufft", "cusparse", "cusolver",
                  "cudnn")
OTHER_SERIES = {"12": {"cufft": "11", "cusolver": "11"}, "11": {"cufft": "10", "cusolver": "11"}}


def cuda_library_names(cuda_version: str, cudnn_version: str) -> list[str]:
    """The file names TF's GPU device dlopens for a build: cuda_version / cudnn_version as in
    tf.sysconfig.get_build_info() (e.g. "12.2", "8"); the driver's libcuda.so.1 first."""
    major = str(cuda_version).split(".")[0]
    series = {**{n: major for n in CUDA_LIBRARIES}, **OTHER_SERIES.get(major, {}),
              "cudnn": str(cudnn_version).split(".")[0]}
    return ["libcuda.so.1"] + [f"lib{n}.so.{series[n]}" for n in CUDA_LIBRARIES
                               if n != "nvJitLink" or major == "12"]


def gpu_library_problems(names: list[str], dlopen, search_dirs: list[str]) -> list[str]:
    """'<file>: <dlopen error>' for each library that loads neither by name (the loader's path)
    nor from one of search_dirs (the nvidia-*-cu12 wheels' lib folders). dlopen(path) raises
    OSError when it cannot load."""
    problems = []
    for name in names:
        errors = []
        for path in [name] + [os.path.join(d, name) for d in search_dirs
                              if os.path.exists(os.path.join(d, name))]:
            try:
                dlopen(path)
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            problems.append(f"{name}: {errors[0] if errors else 'not found'}")
    return problems


def no_gpu_reason() -> str:
    """Why TF sees no GPU here, in one line: a CPU build, the CUDA libraries that do not load
    (what TF's hidden warning would have said), or no device behind a working driver."""
    import ctypes
    import glob
    import tensorflow as tf
    if not tf.test.is_built_with_cuda():
        return (f"TensorFlow {tf.__version__} here is a CPU build (tensorflow-cpu); install the "
                f"GPU stack (`make setup-gpu`) or set train.use_gpu=false")
    info = tf.sysconfig.get_build_info()
    wheels = sorted({d for p in sys.path if p
                     for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))})
    problems = gpu_library_problems(
        cuda_library_names(info.get("cuda_version", ""), info.get("cudnn_version", "")),
        lambda path: ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL), wheels)
    if problems:
        return ("these GPU libraries do not load: " + "; ".join(problems)
                + f" (LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')!r})")
    return ("the CUDA libraries load but no GPU device was found (nvidia-smi on this host? "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")


# --------------------------------------------------------------------------- cuDNN
def cudnn_problems(*, recurrent_dropout: float, activation: str = "tanh",
                   recurrent_activation: str = "sigmoid", unroll: bool = False,
                   use_bias: bool = True) -> list[str]:
    """Keras 2's conditions for the fused cuDNN LSTM kernel (keras.layers.LSTM docstring and
    `_could_use_gpu_kernel`), each broken one as "<lstm key>: why"."""
    problems = []
    if recurrent_dropout != 0:
        problems.append(f"lstm.recurrent_dropout={recurrent_dropout}: must be 0")
    if activation != "tanh":
        problems.append(f"lstm activation={activation!r}: must be 'tanh'")
    if recurrent_activation != "sigmoid":
        problems.append(f"lstm recurrent_activation={recurrent_activation!r}: must be 'sigmoid'")
    if unroll:
        problems.append("lstm unroll=True: must be False")
    if not use_bias:
        problems.append("lstm use_bias=False: must be True")
    return problems


def check_cudnn_eligible(lstm_cfg) -> None:
    """With train.use_gpu on, refuse an LSTM config Keras would run with the generic loop (several
    times slower on a GPU) instead of cuDNN. lstm.build_model fixes activation, unroll and bias at
    their cuDNN values; recurrent_dropout is the one configurable key that can break it."""
    problems = cudnn_problems(recurrent_dropout=lstm_cfg.recurrent_dropout)
    if problems:
        raise ValueError("train.use_gpu=true needs the cuDNN LSTM kernel: " + "; ".join(problems)
                         + " (or set train.use_gpu=false)")


def check_model_cudnn(model) -> None:
    """The built model's LSTM layers, checked against the same conditions (catches a layer
    setting changed in lstm.build_model, not only the config)."""
    from tensorflow import keras
    problems = []
    for layer in model.layers:
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
        if isinstance(inner, keras.layers.LSTM):
            problems += [f"layer {layer.name}: {p}" for p in cudnn_problems(
                recurrent_dropout=inner.recurrent_dropout,
                activation=keras.activations.serialize(inner.activation),
                recurrent_activation=keras.activations.serialize(inner.recurrent_activation),
                unroll=inner.unroll, use_bias=inner.use_bias)]
    if problems:
        raise ValueError("train.use_gpu=true needs the cuDNN LSTM kernel: " + "; ".join(problems))


# --------------------------------------------------------------------------- the driver
def hide_gpus_in_driver() -> bool:
    """The driver process sees no GPU: call before its first TF op (train-lstm's launchers and
    the LSTM scoring in model_store call it). True when hidden (or there was none); False when
    TF was already initialised here (local launcher: this process is the rank)."""
    import tensorflow as tf
    try:
        tf.config.set_visible_devices([], "GPU")
        return True
    except RuntimeError:
        return False


# --------------------------------------------------------------------------- make doctor
def stack_report() -> dict:
    """Which TensorFlow distribution is installed (tensorflow-cpu or the CUDA tensorflow build),
    whether it was built with CUDA, the GPUs it sees, and horovod's Gloo / NCCL support."""
    from importlib.metadata import PackageNotFoundError, version
    dists = {}
    for name in ("tensorflow-cpu", "tensorflow", "horovod"):
        try:
            dists[name] = version(name)
        except PackageNotFoundError:
            dists[name] = None
    import tensorflow as tf
    report = {"stack": "gpu" if tf.test.is_built_with_cuda() else "cpu",
              "tensorflow_dist": "tensorflow-cpu" if dists["tensorflow-cpu"] else "tensorflow",
              "tensorflow": tf.__version__, "built_with_cuda": tf.test.is_built_with_cuda(),
              "cuda_build": dict(tf.sysconfig.get_build_info()) if tf.test.is_built_with_cuda()
              else None,
              "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
              "horovod": dists["horovod"]}
    try:
        import horovod.tensorflow as hvd
        report.update(horovod_gloo=bool(hvd.gloo_built()), horovod_nccl=bool(hvd.nccl_built()),
                      horovod_cuda=bool(hvd.cuda_built()))
    except ImportError as exc:
        report.update(horovod_error=str(exc))
    if report.get("horovod_nccl"):
        report["nccl"] = loaded_nccl()
    built_with = Path(sys.prefix) / ".horovod-built-with"     # make setup-gpu's build settings
    if built_with.exists():
        report["horovod_built_with"] = dict(line.split("=", 1) for line in
                                            built_with.read_text().splitlines() if "=" in line)
    return report


def loaded_nccl() -> dict:
    """The libnccl this process loaded (horovod's NCCL build links it) and its version, read
    through ncclGetVersion, which needs no GPU."""
    import ctypes
    paths = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
             if "/libnccl.so" in line}
    if not paths:
        return {"library": None}
    path = sorted(paths)[0]
    code = ctypes.c_int()
    ctypes.CDLL(path).ncclGetVersion(ctypes.byref(code))
    major, rest = divmod(code.value, 10000) if code.value >= 10000 else divmod(code.value, 1000)
    return {"library": path, "version": f"{major}.{rest // 100}.{rest % 100}"}
