"""The executors' Python as a venv-pack archive (make package-env): the venv minus starscale itself.

starscale is installed editable in the dev venv (.pth line → this repo's lib/), which venv-pack
refuses to pack; on executors the code comes from the --py-files zip instead, so the .pth files
that point only at this repo's lib/ and starscale's egg-link are left out. Any other editable
package is still an error (it would be missing on the executors).

    python -m starscale.packenv VENV OUTPUT.tar.gz     # prints {"output", "bytes", "seconds"}
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time



def _is_starscale_lib(folder: str) -> bool:
    """A folder holding a starscale package (this checkout's lib/ or another worktree's)."""
    return os.path.isfile(os.path.join(folder, "starscale", "__init__.py"))


def own_editable_files(prefix: str) -> list[str]:
    """Paths (relative to prefix) of the .pth files whose every entry is starscale's lib/ and of
    starscale's egg-link; ValueError naming any other editable package."""
    site = glob.glob(os.path.join(prefix, "lib", "python*", "site-packages"))
    if not site:
        raise ValueError(f"{prefix}: not a venv (no lib/python*/site-packages)")
    real_prefix = os.path.realpath(prefix)
    leave_out, others = [], []
    for pth in sorted(glob.glob(os.path.join(site[0], "*.pth"))):
        entries = [line.rstrip() for line in open(pth) if line.strip()
                   and not line.startswith(("#", "import ", "import\t"))]
        outside = [e for e in entries if not os.path.realpath(
            os.path.join(os.path.dirname(pth), e)).startswith(real_prefix)]
        own = [e for e in outside if _is_starscale_lib(os.path.join(os.path.dirname(pth), e))]
        others += [f"{os.path.basename(pth)}: {e}" for e in outside if e not in own]
        if own and len(own) == len(entries):
            leave_out.append(os.path.relpath(pth, prefix))
    if others:
        raise ValueError(f"{prefix}: editable packages other than starscale cannot be shipped: "
                         f"{others}")
    leave_out += [os.path.relpath(p, prefix)
                  for p in glob.glob(os.path.join(site[0], "starscale*.egg-link"))]
    return leave_out


# Not needed on an executor, whose JVM is the node's Spark: pyspark's bundled jars (only a
# driver started from pip's pyspark uses them) and build-only tools (Horovod compiled with
# cmake already). 877 MB → see docs/install.md for the measured size without them.
NOT_SHIPPED = ("lib/python*/site-packages/pyspark/jars/*",
               "lib/python*/site-packages/cmake/*", "bin/cmake", "bin/ctest", "bin/cpack")


def pack(prefix: str, output: str) -> dict:
    """prefix (a venv) → output (.tar.gz), without starscale's own editable install and
    without NOT_SHIPPED."""
    import venv_pack
    import venv_pack.core as core
    leave_out = own_editable_files(prefix) + list(NOT_SHIPPED)
    started = time.time()
    # venv-pack's own editable check reads the .pth files we leave out: skip it (ours ran above).
    saved, core.check_no_editable_packages = core.check_no_editable_packages, lambda ctx: None
    try:
        venv_pack.pack(prefix=prefix, output=output, force=True, verbose=False,
                       filters=[("exclude", p) for p in leave_out])
    finally:
        core.check_no_editable_packages = saved
    return {"output": output, "bytes": os.path.getsize(output),
            "seconds": round(time.time() - started, 1), "left_out": leave_out}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(json.dumps(pack(args[0], args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
