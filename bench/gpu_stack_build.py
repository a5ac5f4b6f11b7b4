"""The GPU stack's build, timed: `make setup-gpu` into a fresh venv, then `make doctor GPU=1`.

Too large for CI (about 6 GB of CUDA wheels and a CUDA compile of horovod). Runs with the base
Python 3.11 and the standard library only (it builds the venv everything else runs in).

The CUDA toolkit (--toolkit):
  debian-11.8  Debian bookworm's nvidia-cuda-toolkit 11.8 from the non-free component, fetched
               with apt-get download into build/ (apt lists of its own: the machine's sources are
               not changed) and unpacked there with g++-11, nothing installed system-wide;
               build/cuda-11.8 is a CUDA_HOME made of links into it. nvcc 11.8 targets sm_70-sm_90
               and its static CUDA runtime runs on CUDA 12.2's drivers (>= 520).
  cuda13       the nvcc on PATH (here /usr/local/bin/nvcc, CUDA 13.0 from PyPI's nvidia-cuda-nvcc
               wheels) with GPU_CUDA13=1: builds, but the result needs driver >= 580, sm_75+.
  none         CUDA_HOME pointing nowhere: shows where make setup-gpu stops without a toolkit.
  PATH         any other value: used as CUDA_HOME.
pip's cache is off (PIP_NO_CACHE_DIR=1) unless --warm, so every wheel is downloaded as a new
machine would. Writes docs/bench/gpu_stack_build.json (docs/install.md has the numbers).

    python3.11 bench/gpu_stack_build.py --toolkit debian-11.8
    python3.11 bench/gpu_stack_build.py --toolkit none --venv out/bench/venv-gpu-none
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
DEBIAN_PACKAGES = ["nvidia-cuda-toolkit", "nvidia-cuda-dev", "libnvvm4", "libcudart11.0", "libcu++-dev",
                   "libcub-dev", "libthrust-dev", "g++-11", "gcc-11", "cpp-11", "libstdc++-11-dev",
                   "libgcc-11-dev", "gcc-11-base", "libasan6", "libtsan0"]
NON_FREE_SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
NVCC_PROFILE = """TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
"""


def du_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


def gib(n: int) -> float:
    return round(n / 2**30, 2)


def debian_toolkit(log) -> tuple[dict, dict]:
    """CUDA 11.8 from Debian's non-free packages, unpacked under build/ (no dpkg install):
    the env for make and what it cost."""
    started = time.time()
    apt = BUILD / "apt-non-free"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "sources").mkdir(exist_ok=True)
    (apt / "sources" / "non-free.sources").write_text(NON_FREE_SOURCES)
    options = ["-o", "Dir::Etc::sourcelist=/dev/null", "-o", f"Dir::Etc::sourceparts={apt / 'sources'}",
               "-o", f"Dir::State::Lists={apt / 'lists'}"]
    debs, unpacked, home = BUILD / "cuda-debs", BUILD / "cuda118", BUILD / "cuda-11.8"
    for path in (debs, unpacked, home):
        shutil.rmtree(path, ignore_errors=True)
    debs.mkdir(parents=True)
    for command in (["apt-get", *options, "update"], ["apt-get", *options, "download", *DEBIAN_PACKAGES]):
        subprocess.run(command, cwd=debs, stdout=log, stderr=subprocess.STDOUT, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
    # A CUDA_HOME in NVIDIA's layout, of links into Debian's (headers in usr/include, libraries
    # in usr/lib/x86_64-linux-gnu, cicc and libdevice in usr/lib/nvidia-cuda-toolkit), with an
    # nvcc.profile that names its own folders instead of /usr.
    toolkit = unpacked / "usr" / "lib" / "nvidia-cuda-toolkit"
    (home / "bin").mkdir(parents=True)
    (home / "nvvm" / "bin").mkdir(parents=True)
    shutil.copy2(toolkit / "bin" / "nvcc", home / "bin" / "nvcc")   # nvcc reads the profile beside itself
    (home / "bin" / "nvcc.profile").write_text(NVCC_PROFILE)
    (home / "bin" / "crt").symlink_to(toolkit / "bin" / "crt")
    for tool in ("ptxas", "fatbinary", "nvlink", "cudafe++", "bin2c", "nvprune", "cuobjdump"):
        (home / "bin" / tool).symlink_to(unpacked / "usr" / "bin" / tool)
    (home / "nvvm" / "bin" / "cicc").symlink_to(toolkit / "bin" / "cicc")
    (home / "nvvm" / "libdevice").symlink_to(toolkit / "libdevice")
    (home / "include").symlink_to(unpacked / "usr" / "include")
    (home / "lib64").symlink_to(unpacked / "usr" / "lib" / "x86_64-linux-gnu")
    env = {"CUDA_HOME": str(home), "PATH": f"{unpacked / 'usr' / 'bin'}:{os.environ['PATH']}"}
    return env, {"toolkit_seconds": round(time.time() - started, 1),
                 "toolkit_download_gib": gib(du_bytes(debs)), "toolkit_unpacked_gib": gib(du_bytes(unpacked))}


def machine_noise(line: str) -> bool:
    """pip's warnings about this machine's own extra index folders (its pip.conf), not the build's."""
    return line.startswith("WARNING: Location 'file:///opt/") or line.startswith("make[")


def run_logged(command: list[str], env: dict, log) -> tuple[int, float, list[str], list[float]]:
    """Run a command with its output to the log and to a list; (rc, seconds, output lines,
    seconds from the start at which each line came)."""
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    started = time.time()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, times = [], []
    for line in proc.stdout:
        log.write(line)
        lines.append(line.rstrip("\n"))
        times.append(round(time.time() - started, 1))
    return proc.wait(), round(time.time() - started, 1), lines, times


def phases(lines: list[str], times: list[float], total: float) -> dict:
    """Seconds of setup-gpu's steps, from when its progress lines came: the check, the venv
    with tensorflow[and-cuda], horovod's build, the rest."""
    marks = {"check": "setup-gpu: nvcc", "tensorflow": "setup-gpu: building horovod",
             "horovod": "pip install -q -c requirements/constraints.txt -r requirements/horovod.txt"}
    out, previous = {}, 0.0
    for name, text in marks.items():
        at = next((t for line, t in zip(lines, times) if text in line), None)
        if at is None:
            break
        out[f"{name}_seconds"] = round(at - previous, 1)
        previous = at
    else:
        out["rest_seconds"] = round(total - previous, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = argparse.ArgumentParser(prog="bench/gpu_stack_build.py", description=__doc__.split("\n\n")[0])
    args.add_argument("--toolkit", default="debian-11.8")
    args.add_argument("--venv", default=".venv-gpu", help="the venv to (re)build (default .venv-gpu)")
    args.add_argument("--warm", action="store_true", help="let pip use its cache")
    args.add_argument("--out", default=str(REPO / "docs" / "bench" / "gpu_stack_build.json"))
    args = args.parse_args(argv)
    venv = (REPO / args.venv).absolute()
    BUILD.mkdir(exist_ok=True)
    log_path = BUILD / f"{Path(args.out).stem}.log"
    result: dict = {"benchmark": "gpu_stack_build", "command": " ".join(["python3.11", *sys.argv]),
                    "toolkit": args.toolkit, "pip_cache": "warm" if args.warm else "off",
                    "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                "utc_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                    "log": str(log_path.relative_to(REPO))}
    env = {**os.environ, "PY": sys.executable}
    if not args.warm:
        env["PIP_NO_CACHE_DIR"] = "1"
    with open(log_path, "w") as log:
        if args.toolkit == "debian-11.8":
            extra, cost = debian_toolkit(log)
            env.update(extra)
            result.update(cost)
        elif args.toolkit == "cuda13":
            env["GPU_CUDA13"] = "1"
        elif args.toolkit == "none":
            env["CUDA_HOME"] = str(BUILD / "no-cuda-toolkit")
        else:
            env["CUDA_HOME"] = args.toolkit
        shutil.rmtree(venv, ignore_errors=True)
        rc, seconds, lines, times = run_logged(
            ["make", "setup-gpu", f"VENV_GPU={venv}", f"PY={sys.executable}"], env, log)
        # du, not the free space's change: other work on a shared disk moves that.
        result["setup_gpu"] = {"rc": rc, "seconds": seconds, **phases(lines, times, seconds),
                               "output": [line for line in lines if not machine_noise(line)],
                               "venv_gib": gib(du_bytes(venv)),
                               "build_dir_gib": gib(du_bytes(BUILD / "setup-gpu"))}
        if rc == 0:
            rc, seconds, lines, _ = run_logged(["make", "-s", "doctor", "GPU=1", f"VENV_GPU={venv}"],
                                               env, log)
            result["doctor"] = {"rc": rc, "seconds": seconds, "output": lines}
    result["machine"]["utc_end"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    setup = result["setup_gpu"]
    print(f"make setup-gpu: rc {setup['rc']} in {setup['seconds']} s, venv {setup['venv_gib']} GiB; "
          f"last line: {(setup['output'] or [''])[-1]}")
    if "doctor" in result:
        print("make doctor GPU=1:\n" + "\n".join(result["doctor"]["output"]))
    print(f"wrote {args.out} (log {log_path})")
    return result


if __name__ == "__main__":
    main()
