"""The GPU stack's build for `make setup-gpu`, in two steps (stdlib only: `check` runs on the
base Python before .venv-gpu exists, so the file is run by path, not imported through starscale).

1. `check`: every prerequisite of the horovod CUDA build, before gigabytes are downloaded: an
   nvcc that targets the CUDA 12.2 stack, a host C++ compiler it accepts (proven by compiling a
   kernel), free disk. The first failure is one line naming what to install and where; on
   success the build's settings go to an env file (KEY=VALUE lines) for step 2.
2. `build-horovod` (run with .venv-gpu's Python, after tensorflow[and-cuda] is installed):
   horovod with HOROVOD_GPU_OPERATIONS=NCCL against the nvidia-nccl-cu12 wheel. That wheel ships
   include/nccl.h and lib/libnccl.so.2 only, and horovod's FindNCCL looks for libnccl_static.a or
   libnccl.so (horovod#2408), so a build-only folder gets include/ and a lib/libnccl.so link to
   the wheel's library; HOROVOD_NCCL_LINK=SHARED. The built library needs libnccl.so.2 at run
   time, which is in no system folder: its RPATH gets $ORIGIN/../../nvidia/nccl/lib (the wheel's
   folder relative to site-packages/horovod/tensorflow/), which also holds inside a venv-pack
   archive. The build's output goes to a log file; a failure prints one line and the log's path.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# GPUs the kernels are compiled for: V100 (7.0), T4 (7.5), A100 (8.0), A10/A40 (8.6), L4 (8.9),
# H100 (9.0) — the ones TensorFlow 2.15's own CUDA build runs on, minus the pre-Volta ones.
WANTED_ARCHS = (70, 75, 80, 86, 89, 90)
# tensorflow[and-cuda] 2.15.1 brings CUDA 12.2 (driver >= 525 with CUDA's minor-version
# compatibility, 535 as shipped). Code from nvcc 11.8-12.x links its own static CUDA runtime
# that such a driver runs; nvcc 13 code needs driver >= 580 and cannot target sm_70.
MIN_NVCC = (11, 8)
MAX_NVCC_MAJOR = 12
# The newest GCC each nvcc accepts (NVIDIA's installation guides); newer ones are refused.
MAX_GCC = {(11, 8): 11, (12, 0): 12, (12, 4): 13, (12, 8): 14, (13, 0): 15}
# Downloaded and unpacked tensorflow[and-cuda] + horovod's build; measured in docs/install.md.
MIN_FREE_GB = 12
INSTALL_HINT = ("install a CUDA 11.8-12.x toolkit and set CUDA_HOME=<its root> (Debian: "
                "nvidia-cuda-toolkit from non-free = 11.8; NVIDIA: cuda-toolkit-12-2); PyPI's "
                "nvidia-cuda-nvcc-cu12 wheels hold no nvcc (docs/install.md)")


class Missing(Exception):
    """A prerequisite that is not there: its message is the one line to print."""


def find_nvcc(env: dict) -> Path | None:
    """CUDA_HOME/bin/nvcc, then nvcc on PATH, then /usr/local/cuda/bin/nvcc."""
    home = env.get("CUDA_HOME") or env.get("HOROVOD_CUDA_HOME")
    if home:
        return Path(home) / "bin" / "nvcc"
    on_path = shutil.which("nvcc", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    default = Path("/usr/local/cuda/bin/nvcc")
    return default if default.exists() else None


def parse_nvcc_version(text: str) -> tuple[int, int]:
    """(major, minor) from `nvcc --version` ("Cuda compilation tools, release 12.2, V12.2.140")."""
    found = re.search(r"release (\d+)\.(\d+)", text)
    if not found:
        raise ValueError(f"no 'release X.Y' in nvcc --version output: {text.strip()[:200]!r}")
    return int(found.group(1)), int(found.group(2))


def parse_nvcc_archs(help_text: str) -> list[int]:
    """The sm_XY an nvcc can compile for, from the --gpu-architecture section of `nvcc --help`
    (the list horovod's build_utils.get_nvcc_flags reads)."""
    section = re.search(r"--gpu-architecture.*?Allowed values for this option:(.*?)--gpu-code",
                        help_text, re.S)
    if not section:
        return []
    return sorted({int(n) for n in re.findall(r"\bsm_(\d+)\b", section.group(1))})


def cuda_root(nvcc: Path) -> Path:
    """The toolkit root of an nvcc path, through wrapper scripts and symlinks
    (/usr/local/bin/nvcc here is a script that execs /usr/local/cuda-13.0/bin/nvcc)."""
    real = nvcc.resolve()
    try:
        text = real.read_text(errors="replace") if real.stat().st_size < 4096 else ""
    except OSError:
        text = ""
    target = re.search(r"exec\s+(\S+/bin/nvcc)\b", text)
    if target:
        real = Path(target.group(1)).resolve()
    return real.parent.parent


def max_gcc(version: tuple[int, int]) -> int:
    """The newest GCC major an nvcc release accepts."""
    return max(v for k, v in MAX_GCC.items() if k <= version)


def gcc_major(cxx: str) -> int | None:
    try:
        out = subprocess.run([cxx, "-dumpversion"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"(\d+)", out.stdout.strip())
    return int(found.group(1)) if out.returncode == 0 and found else None


def pick_host_compiler(env: dict, limit: int) -> str:
    """CXX (or g++) when nvcc accepts its version, else the newest g++-N with N <= limit on PATH."""
    first = env.get("CUDAHOSTCXX") or env.get("CXX") or "g++"
    candidates = [first] + [f"g++-{n}" for n in range(limit, 8, -1)]
    for cxx in candidates:
        path = shutil.which(cxx, path=env.get("PATH"))
        major = gcc_major(path) if path else None
        if major is not None and major <= limit:
            return path
    first_path = shutil.which(first, path=env.get("PATH"))
    raise Missing(f"make setup-gpu: no C++ compiler that this nvcc accepts (GCC <= {limit}; "
                  f"{first} is GCC {gcc_major(first_path) if first_path else 'not found'}): "
                  f"apt-get install g++-{limit}, or set CUDAHOSTCXX=<a g++ <= {limit}>")


def free_gb(path: Path) -> float:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


def check(env: dict, venv: Path, workdir: Path) -> dict:
    """Every prerequisite of the build, in the order a user would fix them; returns the
    build's settings or raises Missing with the one line to print."""
    if sys.version_info[:2] != (3, 11):
        raise Missing(f"make setup-gpu: Python 3.11 needed, this is {sys.version.split()[0]} "
                      f"({sys.executable}); set PY=python3.11")
    nvcc = find_nvcc(env)
    if nvcc is None or not nvcc.exists():
        where = f" (CUDA_HOME={env['CUDA_HOME']} has no bin/nvcc)" if env.get("CUDA_HOME") else ""
        raise Missing(f"make setup-gpu: no nvcc, the CUDA compiler horovod's GPU kernels need"
                      f"{where}: {INSTALL_HINT}")
    try:
        version = parse_nvcc_version(subprocess.run([str(nvcc), "--version"], capture_output=True,
                                                    text=True, timeout=60).stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise Missing(f"make setup-gpu: {nvcc} does not run ({exc}): {INSTALL_HINT}") from None
    shown = f"nvcc {version[0]}.{version[1]} at {nvcc}"
    if version < MIN_NVCC:
        raise Missing(f"make setup-gpu: {shown} cannot compile for sm_90 (H100): {INSTALL_HINT}")
    if version[0] > MAX_NVCC_MAJOR and env.get("GPU_CUDA13") != "1":
        raise Missing(f"make setup-gpu: {shown} builds CUDA {version[0]} code (NVIDIA driver >= 580, "
                      f"no sm_70), not for the CUDA 12.2 stack of tensorflow 2.15: {INSTALL_HINT}; "
                      f"or GPU_CUDA13=1 for nodes whose driver is >= 580")
    archs = parse_nvcc_archs(subprocess.run([str(nvcc), "--help"], capture_output=True,
                                            text=True, timeout=60).stdout)
    wanted = env.get("GPU_CC_LIST")
    if wanted and not re.fullmatch(r"\d+(,\d+)*", wanted):
        raise Missing(f"make setup-gpu: GPU_CC_LIST={wanted!r}: compute capabilities without dots, "
                      f"comma-separated (e.g. 80,90)")
    cc_list = ([int(x) for x in wanted.split(",")] if wanted
               else [a for a in WANTED_ARCHS if a in archs])
    if not cc_list or any(a not in archs for a in cc_list):
        raise Missing(f"make setup-gpu: {shown} cannot compile for "
                      f"{['sm_%d' % a for a in cc_list if a not in archs] or 'any wanted GPU'} "
                      f"(it knows {['sm_%d' % a for a in archs]}): {INSTALL_HINT}")
    cxx = pick_host_compiler(env, max_gcc(version))
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / "probe.cu"
    probe.write_text("__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }\n"
                     "int main() { float *x = 0; scale<<<1, 32>>>(x, 2.0f); return 0; }\n")
    arch = cc_list[-1]
    compiled = subprocess.run([str(nvcc), "-ccbin", cxx, "-O3", "-Xcompiler", "-fPIC",
                               "-gencode", f"arch=compute_{arch},code=sm_{arch}",
                               "-o", str(workdir / "probe"), str(probe)],
                              capture_output=True, text=True, timeout=300)
    (workdir / "probe.log").write_text(compiled.stdout + compiled.stderr)
    if compiled.returncode != 0:
        first = next((line for line in (compiled.stderr + compiled.stdout).splitlines()
                      if line.strip()), "no output")
        raise Missing(f"make setup-gpu: {shown} with {cxx} cannot compile a kernel ({first.strip()}; "
                      f"log {workdir / 'probe.log'})")
    free = free_gb(venv)
    if free < MIN_FREE_GB:
        raise Missing(f"make setup-gpu: {free:.1f} GB free under {venv}, the CUDA wheels and the "
                      f"build need {MIN_FREE_GB} GB: free some disk")
    return {"HOROVOD_CUDA_HOME": str(cuda_root(nvcc)), "CUDAHOSTCXX": cxx,
            "HOROVOD_BUILD_CUDA_CC_LIST": ",".join(map(str, cc_list)),
            "NVCC_VERSION": f"{version[0]}.{version[1]}"}


def nccl_build_dir(nccl_pkg: Path, dest: Path) -> Path:
    """A folder horovod's FindNCCL accepts, made from the nvidia-nccl-cu12 wheel's package folder
    (site-packages/nvidia/nccl): dest/include -> the wheel's include/, dest/lib/libnccl.so -> its
    lib/libnccl.so.2. Used for the build only: the library's SONAME, libnccl.so.2, is what the
    built horovod asks for at run time."""
    header, library = nccl_pkg / "include" / "nccl.h", nccl_pkg / "lib" / "libnccl.so.2"
    for need in (header, library):
        if not need.exists():
            raise Missing(f"make setup-gpu: {need} not found: the nvidia-nccl-cu12 wheel (from "
                          f"tensorflow[and-cuda]) is not installed in this venv")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "lib").mkdir(parents=True)
    (dest / "include").symlink_to(header.parent.resolve())
    (dest / "lib" / "libnccl.so").symlink_to(library.resolve())
    return dest


def nccl_package_dir(python: str) -> Path:
    """site-packages/nvidia/nccl of a venv (a namespace package: no __file__ on some wheels)."""
    out = subprocess.run([python, "-c", "import nvidia.nccl, os; "
                          "print(list(nvidia.nccl.__path__)[0])"], capture_output=True, text=True)
    if out.returncode != 0:
        raise Missing("make setup-gpu: nvidia.nccl is not importable in the venv: the "
                      "nvidia-nccl-cu12 wheel (from tensorflow[and-cuda]) is not installed")
    return Path(out.stdout.strip())


def build_env(base: dict, settings: dict, nccl_dir: Path, bin_dir: Path) -> dict:
    """The environment of horovod's pip build: TF + Gloo + NCCL, no MPI / PyTorch / MXNet."""
    env = dict(base)
    env.update(settings)
    env.update(HOROVOD_WITH_TENSORFLOW="1", HOROVOD_WITH_GLOO="1", HOROVOD_WITHOUT_MPI="1",
               HOROVOD_WITHOUT_PYTORCH="1", HOROVOD_WITHOUT_MXNET="1",
               HOROVOD_GPU_OPERATIONS="NCCL", HOROVOD_NCCL_LINK="SHARED",
               HOROVOD_NCCL_INCLUDE=str(nccl_dir / "include"), HOROVOD_NCCL_LIB=str(nccl_dir / "lib"),
               # horovod's setup.py runs make -j8 unless MAKEFLAGS is set (non-empty).
               MAKEFLAGS=f"-j{os.cpu_count() or 2}", PATH=f"{bin_dir}:{base.get('PATH', '')}")
    # horovod's CMakeLists makes the C++ compiler nvcc's host compiler (CMAKE_CUDA_HOST_COMPILER),
    # so the whole build uses the one nvcc accepts.
    env["CXX"] = settings["CUDAHOSTCXX"]
    env.pop("HOROVOD_NCCL_HOME", None)
    env.pop("NVCC_VERSION", None)
    return env


def read_env_file(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def last_error(log_text: str) -> str:
    """The first line of the log that says why the build stopped (CMake/compiler/pip)."""
    cmake = re.search(r"CMake Error.*\n\s*(\S.*)", log_text)
    if cmake:
        return "CMake: " + cmake.group(1).strip()[:300]
    for pattern in (r".*\berror\b:.*", r".*Error.*"):
        found = re.search(pattern, log_text)
        if found:
            return found.group(0).strip()[:300]
    return "see the log"


def set_rpath(patchelf: str, library: Path, extra: str, build_only: Path) -> None:
    """Append `extra` to the library's RPATH and drop the build-only NCCL folder CMake put there
    (an absolute path of this checkout, meaningless on the nodes)."""
    current = subprocess.run([patchelf, "--print-rpath", str(library)], capture_output=True,
                             text=True, check=True).stdout.strip()
    parts = list(dict.fromkeys(p for p in current.split(":") + [extra]
                               if p and not p.startswith(str(build_only))))
    subprocess.run([patchelf, "--set-rpath", ":".join(parts), str(library)], check=True)


def build_horovod(venv: Path, requirement: str, env_file: Path, workdir: Path) -> None:
    python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    nccl_dir = nccl_build_dir(nccl_package_dir(python), workdir / "nccl")
    env = build_env(os.environ, read_env_file(env_file), nccl_dir, bin_dir)
    log = workdir / "horovod-build.log"
    with open(log, "w") as out:
        built = subprocess.run([python, "-m", "pip", "install", "-v", "--no-build-isolation",
                                "--no-cache-dir", "--force-reinstall", "--no-deps", "-r", requirement],
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text(errors="replace")
    if built.returncode != 0:
        raise Missing(f"make setup-gpu: horovod's build failed: {last_error(text)} (full log {log})")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    patchelf = shutil.which("patchelf", path=str(bin_dir)) or shutil.which("patchelf")
    if not patchelf:
        raise Missing("make setup-gpu: patchelf not found in the venv (requirements/gpu.txt)")
    linked = 0
    for library in (site / "horovod").rglob("*.so"):
        needed = subprocess.run([patchelf, "--print-needed", str(library)], capture_output=True,
                                text=True).stdout.split()
        if "libnccl.so.2" in needed:
            depth = len(library.relative_to(site).parts) - 1
            set_rpath(patchelf, library, "$ORIGIN/" + "../" * depth + "nvidia/nccl/lib", nccl_dir)
            linked += 1
    if not linked:
        raise Missing(f"make setup-gpu: horovod was built without NCCL (no library under "
                      f"{site / 'horovod'} links libnccl.so.2; full log {log})")
    probe = subprocess.run([python, "-c", "import horovod.tensorflow as hvd; "
                            "import sys; sys.exit(0 if hvd.nccl_built() and hvd.cuda_built() else 3)"],
                           capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["nccl_built() or cuda_built() is false"])[-1]
        raise Missing(f"make setup-gpu: the built horovod does not load with NCCL and CUDA: {why}")


def main(argv: list[str]) -> int:
    """check VENV WORKDIR ENV_FILE | build-horovod VENV REQUIREMENT ENV_FILE WORKDIR"""
    try:
        if argv[:1] == ["check"] and len(argv) == 4:
            settings = check(dict(os.environ), Path(argv[1]).absolute(), Path(argv[2]).absolute())
            Path(argv[3]).write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
            print(f"setup-gpu: nvcc {settings['NVCC_VERSION']} ({settings['HOROVOD_CUDA_HOME']}), "
                  f"host compiler {settings['CUDAHOSTCXX']}, "
                  f"GPUs sm_{settings['HOROVOD_BUILD_CUDA_CC_LIST'].replace(',', ',sm_')}")
        elif argv[:1] == ["build-horovod"] and len(argv) == 5:
            build_horovod(Path(argv[1]).absolute(), argv[2], Path(argv[3]), Path(argv[4]).absolute())
        else:
            print(main.__doc__, file=sys.stderr)
            return 2
    except Missing as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
