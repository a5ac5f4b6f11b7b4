"""make setup-gpu's prerequisite check and NCCL folder (lib/starscale/gpustack.py), with fake
nvcc scripts: no CUDA toolkit or GPU is needed. The real build is bench/gpu_stack_build.py."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib" / "starscale"))
import gpustack  # noqa: E402  (run by path by the Makefile, before any venv exists)

HELP_13 = """--gpu-architecture <arch>                       (-arch)
        Specify the name of the class of NVIDIA 'virtual' GPU architecture.
        Allowed values for this option:  compute_75,compute_80,compute_90,sm_75,sm_80,sm_86,
        sm_89,sm_90,sm_90a,sm_100,sm_120.
--gpu-code <code>,...                           (-code)
        Allowed values for this option:  sm_52,sm_61.
"""
HELP_118 = HELP_13.replace("compute_75,compute_80,compute_90,sm_75,sm_80,sm_86,\n        sm_89,sm_90,sm_90a,sm_100,sm_120",
                           "compute_35,sm_35,sm_50,sm_60,sm_70,sm_75,sm_80,sm_86,sm_89,sm_90")


def fake_toolkit(root: Path, release: str, help_text: str, compile_ok: bool = True) -> Path:
    """root/bin/nvcc printing `release` and `help_text`; a compile writes -o's file (or fails)."""
    (root / "bin").mkdir(parents=True)
    (root / "help.txt").write_text(help_text)
    nvcc = root / "bin" / "nvcc"
    compile_part = ('out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done; '
                    'touch "$out"; exit 0' if compile_ok
                    else 'echo "probe.cu(1): error: identifier \\"threadIdx\\" is undefined" >&2; exit 1')
    nvcc.write_text("#!/bin/sh\n"
                    f'if [ "$1" = --version ]; then echo "Cuda compilation tools, release {release}, '
                    f'V{release}.1"; exit 0; fi\n'
                    f'if [ "$1" = --help ]; then cat "{root}/help.txt"; exit 0; fi\n'
                    f"{compile_part}\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return root


@pytest.fixture(autouse=True)
def roomy_disk(monkeypatch):
    """The check's disk test reads the real free space under the venv's folder; a CI machine's
    /tmp may hold less than the build's 12 GB, so every test here sees 100 GB unless it sets its
    own (test_too_little_disk_is_named_with_the_folder)."""
    monkeypatch.setattr(gpustack, "free_gb", lambda path: 100.0)


def env_for(tmp_path: Path, toolkit: Path | None, **extra) -> dict:
    env = {"PATH": os.environ["PATH"]}
    if toolkit is not None:
        env["CUDA_HOME"] = str(toolkit)
    env.update(extra)
    return env


def test_version_and_arch_parsing():
    assert gpustack.parse_nvcc_version(
        "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.2, V12.2.140\n") == (12, 2)
    assert gpustack.parse_nvcc_archs(HELP_13) == [75, 80, 86, 89, 90, 100, 120]
    assert gpustack.parse_nvcc_archs(HELP_118) == [35, 50, 60, 70, 75, 80, 86, 89, 90]
    with pytest.raises(ValueError, match="release"):
        gpustack.parse_nvcc_version("command not found")


def test_newest_gcc_each_nvcc_accepts():
    assert [gpustack.max_gcc(v) for v in [(11, 8), (12, 2), (12, 4), (12, 9), (13, 0)]] == [11, 12, 13, 14, 15]


def test_no_nvcc_is_one_line_naming_the_toolkit_and_cuda_home(tmp_path):
    with pytest.raises(gpustack.Missing) as err:
        gpustack.check(env_for(tmp_path, tmp_path / "nowhere"), tmp_path / "venv", tmp_path / "w")
    line = str(err.value)
    assert "\n" not in line
    assert "no nvcc" in line and f"CUDA_HOME={tmp_path / 'nowhere'} has no bin/nvcc" in line
    assert "nvidia-cuda-toolkit" in line and "CUDA_HOME=<its root>" in line


def test_cuda13_nvcc_is_refused_unless_asked_for(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", "13.0", HELP_13)
    with pytest.raises(gpustack.Missing, match=r"nvcc 13.0 at .* driver >= 580, no sm_70.*GPU_CUDA13=1"):
        gpustack.check(env_for(tmp_path, toolkit), tmp_path / "venv", tmp_path / "w")
    settings = gpustack.check(env_for(tmp_path, toolkit, GPU_CUDA13="1"), tmp_path / "venv", tmp_path / "w")
    # CUDA 13 has no sm_70: the wanted list loses it, keeps the rest
    assert settings["HOROVOD_BUILD_CUDA_CC_LIST"] == "75,80,86,89,90"
    assert settings["HOROVOD_CUDA_HOME"] == str(toolkit.resolve())
    assert settings["NVCC_VERSION"] == "13.0"


def test_cuda_12_toolkit_passes_with_every_wanted_gpu(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-12.2", "12.2", HELP_118)
    settings = gpustack.check(env_for(tmp_path, toolkit), tmp_path / "venv", tmp_path / "w")
    assert settings["HOROVOD_BUILD_CUDA_CC_LIST"] == "70,75,80,86,89,90"
    assert Path(settings["CUDAHOSTCXX"]).name.startswith("g++")


def test_too_little_disk_is_named_with_the_folder(tmp_path, monkeypatch):
    toolkit = fake_toolkit(tmp_path / "cuda-12.2", "12.2", HELP_118)
    monkeypatch.setattr(gpustack, "free_gb", lambda path: 10.7)
    with pytest.raises(gpustack.Missing, match=r"10.7 GB free under .*venv, .* need 12 GB: free some disk"):
        gpustack.check(env_for(tmp_path, toolkit), tmp_path / "venv", tmp_path / "w")


def test_asked_for_gpu_the_nvcc_cannot_build_is_named(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", "13.0", HELP_13)
    with pytest.raises(gpustack.Missing, match=r"cannot compile for \['sm_70'\]"):
        gpustack.check(env_for(tmp_path, toolkit, GPU_CUDA13="1", GPU_CC_LIST="70,80"),
                       tmp_path / "venv", tmp_path / "w")


def test_malformed_gpu_list_is_named(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-12.2", "12.2", HELP_118)
    with pytest.raises(gpustack.Missing, match=r"GPU_CC_LIST='8\.0,9\.0': compute capabilities without dots"):
        gpustack.check(env_for(tmp_path, toolkit, GPU_CC_LIST="8.0,9.0"), tmp_path / "venv", tmp_path / "w")


def test_too_new_host_compiler_names_the_one_to_install(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-11.8", "11.8", HELP_118)
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    gxx = fake_bin / "g++"
    gxx.write_text("#!/bin/sh\necho 14\n")          # -dumpversion of a GCC 14
    gxx.chmod(0o755)
    with pytest.raises(gpustack.Missing, match=r"GCC <= 11; g\+\+ is GCC 14\): apt-get install g\+\+-11"):
        gpustack.check({"CUDA_HOME": str(toolkit), "PATH": str(fake_bin)}, tmp_path / "venv", tmp_path / "w")


def test_a_kernel_that_does_not_compile_stops_with_nvccs_first_line_and_the_log(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-12.2", "12.2", HELP_118, compile_ok=False)
    with pytest.raises(gpustack.Missing) as err:
        gpustack.check(env_for(tmp_path, toolkit), tmp_path / "venv", tmp_path / "w")
    assert 'identifier "threadIdx" is undefined' in str(err.value)
    assert str(tmp_path / "w" / "probe.log") in str(err.value)


def test_cuda_root_follows_a_wrapper_script(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", "13.0", HELP_13)
    wrapper = tmp_path / "usr-local-bin-nvcc"
    wrapper.write_text(f"#!/bin/sh\nexec {toolkit}/bin/nvcc \"$@\"\n")
    assert gpustack.cuda_root(wrapper) == toolkit.resolve()
    assert gpustack.cuda_root(toolkit / "bin" / "nvcc") == toolkit.resolve()


def test_nccl_folder_from_the_wheel_layout(tmp_path):
    """The nvidia-nccl-cu12 wheel's layout: include/nccl.h, lib/libnccl.so.2 (no libnccl.so)."""
    wheel = tmp_path / "site-packages" / "nvidia" / "nccl"
    (wheel / "include").mkdir(parents=True)
    (wheel / "lib").mkdir()
    (wheel / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
    (wheel / "lib" / "libnccl.so.2").write_bytes(b"\x7fELF fake")
    dest = gpustack.nccl_build_dir(wheel, tmp_path / "build" / "nccl")
    assert (dest / "include" / "nccl.h").read_text() == "#define NCCL_MAJOR 2\n"
    assert (dest / "lib" / "libnccl.so").resolve() == (wheel / "lib" / "libnccl.so.2").resolve()
    # a second build replaces the folder
    assert gpustack.nccl_build_dir(wheel, dest) == dest
    (wheel / "lib" / "libnccl.so.2").unlink()
    with pytest.raises(gpustack.Missing, match=r"libnccl.so.2 not found: the nvidia-nccl-cu12 wheel"):
        gpustack.nccl_build_dir(wheel, dest)


def test_horovod_build_env_points_findnccl_at_the_folder(tmp_path):
    env = gpustack.build_env({"PATH": "/usr/bin", "HOROVOD_NCCL_HOME": "/wrong"},
                             {"HOROVOD_CUDA_HOME": "/cuda", "CUDAHOSTCXX": "/usr/bin/g++-11",
                              "HOROVOD_BUILD_CUDA_CC_LIST": "70,90", "NVCC_VERSION": "11.8"},
                             tmp_path / "nccl", tmp_path / "venv" / "bin")
    assert env["HOROVOD_NCCL_INCLUDE"] == str(tmp_path / "nccl" / "include")
    assert env["HOROVOD_NCCL_LIB"] == str(tmp_path / "nccl" / "lib")
    assert env["HOROVOD_NCCL_LINK"] == "SHARED" and "HOROVOD_NCCL_HOME" not in env
    assert env["HOROVOD_GPU_OPERATIONS"] == "NCCL" and env["HOROVOD_WITHOUT_MPI"] == "1"
    assert env["CXX"] == "/usr/bin/g++-11" and env["PATH"].startswith(str(tmp_path / "venv" / "bin"))


def test_last_error_takes_the_line_after_cmake_error():
    log = ("-- Linking against shared NCCL library\n"
           "CMake Error at /usr/share/cmake/Modules/FindPackageHandleStandardArgs.cmake:230 (message):\n"
           "  Could NOT find NCCL (missing: NCCL_INCLUDE_DIR NCCL_LIBRARY)\n"
           "Call Stack (most recent call first):\n")
    assert gpustack.last_error(log) == "CMake: Could NOT find NCCL (missing: NCCL_INCLUDE_DIR NCCL_LIBRARY)"
    assert gpustack.last_error("x.cc:3:1: error: 'foo' was not declared\nmore") == \
        "x.cc:3:1: error: 'foo' was not declared"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_setup_gpu_stops_with_one_line_before_any_download(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv-gpu"
    out = subprocess.run(["make", "-s", "setup-gpu", f"VENV_GPU={venv}", f"CUDA_HOME={tmp_path / 'none'}"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode != 0
    assert len(lines) == 1
    assert f"make setup-gpu: no nvcc, the CUDA compiler horovod's GPU kernels need (CUDA_HOME=" \
           f"{tmp_path / 'none'} has no bin/nvcc)" in lines[0]
    assert not venv.exists()
