"""The only code that touches output paths: atomic publish, manifests, input fingerprints.

Paths go through Hadoop's FileSystem API (via the session's JVM), so the same code works on a
local disk, HDFS or S3. A stage writes into ``<output>._staging``, puts its manifest there last,
then swaps the staging folder into place with renames. A run killed before the swap leaves the
previous output untouched; a folder without ``_MANIFEST.json`` is never read as an input.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from typing import Any, Callable
from urllib.parse import urlparse

MANIFEST = "_MANIFEST.json"
STAGING_SUFFIX = "._staging"
OLD_SUFFIX = "._old"


def qualify(path: str) -> str:
    """Absolute local path for scheme-less paths, so executors on this host resolve it the same."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:  # not a Windows drive letter
        return path.rstrip("/")
    return os.path.abspath(path)


def local_path(path: str) -> str | None:
    """The plain filesystem path for a local (file: or scheme-less) path, else None."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else os.path.abspath(path)
    return None


def _fs(spark, path: str):
    jvm = spark._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(qualify(path))
    return jpath.getFileSystem(spark._jsc.hadoopConfiguration()), jpath


def exists(spark, path: str) -> bool:
    fs, jpath = _fs(spark, path)
    return bool(fs.exists(jpath))


def delete(spark, path: str) -> None:
    fs, jpath = _fs(spark, path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def rename(spark, src: str, dst: str) -> None:
    fs, jsrc = _fs(spark, src)
    _, jdst = _fs(spark, dst)
    if not fs.rename(jsrc, jdst):
        raise OSError(f"rename failed: {src} -> {dst}")


def write_text(spark, path: str, text: str) -> None:
    """Write a small text file (temp file + rename, so readers never see half of it)."""
    fs, jpath = _fs(spark, path)
    tmp = spark._jvm.org.apache.hadoop.fs.Path(qualify(path) + ".tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(jpath):
        fs.delete(jpath, False)
    if not fs.rename(tmp, jpath):
        raise OSError(f"could not write {path}")


def read_text(spark, path: str) -> str:
    fs, jpath = _fs(spark, path)
    if not fs.exists(jpath):
        raise FileNotFoundError(path)
    jvm = spark._jvm
    stream = fs.open(jpath)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
        return "\n".join(lines)
    finally:
        stream.close()


def list_files(spark, pattern: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ms) of every file a path, folder or glob names, sorted by path.

    Folders are listed recursively; names starting with '_' or '.' (Spark/Hadoop markers,
    checksums) are skipped, like Spark's own readers do.
    """
    fs, jpath = _fs(spark, pattern)
    statuses = fs.globStatus(jpath)
    found: list[tuple[str, int, int]] = []

    def walk(status) -> None:
        name = status.getPath().getName()
        if name.startswith(("_", ".")):
            return
        if status.isDirectory():
            for child in fs.listStatus(status.getPath()):
                walk(child)
        else:
            found.append((status.getPath().toString(), int(status.getLen()),
                          int(status.getModificationTime())))

    for status in statuses or []:
        walk(status)
    return sorted(found)


# --------------------------------------------------------------------------- manifests
def read_manifest(spark, output: str) -> dict | None:
    path = qualify(output) + "/" + MANIFEST
    try:
        return json.loads(read_text(spark, path))
    except FileNotFoundError:
        return None


def read_manifest_local(output: str) -> dict | None:
    """Manifest of a local output without Spark (Horovod workers, the report)."""
    lp = local_path(output)
    if lp is None:
        raise ValueError(f"{output}: not a local path; read it through Spark")
    path = os.path.join(lp, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def require_manifest(spark, path: str, producer: str) -> dict:
    """The manifest of an upstream output, or a ValueError saying which stage to run."""
    _recover(spark, path)
    manifest = read_manifest(spark, path)
    if manifest is None:
        raise ValueError(f"input {path} has no complete {MANIFEST}: run the '{producer}' stage "
                         f"first (a folder without a manifest is an unfinished or foreign write)")
    return manifest


def fingerprint(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def raw_fingerprints(spark, patterns: list[str]) -> list[dict]:
    """Identity of raw input files: path, size and modification time of each."""
    out = []
    for pattern in patterns:
        files = list_files(spark, pattern)
        if not files:
            raise ValueError(f"input not found or empty: {pattern}")
        out.extend({"path": p, "size": s, "mtime_ms": m} for p, s, m in files)
    return out


def _recover(spark, output: str) -> None:
    """Finish a swap that a kill interrupted between its two renames."""
    final = qualify(output)
    old = final + OLD_SUFFIX
    if not exists(spark, final) and exists(spark, old):
        rename(spark, old, final)
    elif exists(spark, old):
        delete(spark, old)


def publish(spark, output: str, write: Callable[[str], dict[str, Any]],
            manifest_base: dict[str, Any]) -> dict[str, Any]:
    """Run write(staging_dir) → stage counts, then publish staging_dir as output atomically.

    The manifest (manifest_base + what write returned + timing) is written into the staging
    folder last, so a published folder always carries a complete manifest.
    """
    final = qualify(output)
    staging = final + STAGING_SUFFIX
    _recover(spark, final)
    delete(spark, staging)               # leftovers of a killed run
    started = time.time()
    produced = write(staging)
    manifest = {
        **manifest_base,
        **produced,
        "output": final,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 3),
        "complete": True,
    }
    write_text(spark, staging + "/" + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    if exists(spark, final):
        rename(spark, final, final + OLD_SUFFIX)
    rename(spark, staging, final)
    delete(spark, final + OLD_SUFFIX)
    return manifest


def run_stage(spark, *, stage: str, output: str, config_hash: str, config: dict,
              upstream: dict[str, str] | None = None, raw_inputs: list[str] | None = None,
              force: bool = False, write: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Publish one stage's output, or skip when its manifest matches config and inputs.

    upstream maps each input path to the stage that produces it (its manifest is required);
    raw_inputs are files/globs fingerprinted by size and mtime.
    """
    final = qualify(output)
    upstream = upstream or {}
    for path in list(upstream) + list(raw_inputs or []):
        if qualify(path) == final or final.startswith(qualify(path).rstrip("*") + "/") \
                or qualify(path).startswith(final + "/"):
            raise ValueError(f"{stage}: output path {final} overlaps input path {path}")
    inputs: dict[str, Any] = {}
    for path, producer in upstream.items():
        inputs[qualify(path)] = fingerprint(require_manifest(spark, path, producer))
    if raw_inputs:
        inputs["raw"] = raw_fingerprints(spark, raw_inputs)
    _recover(spark, final)
    existing = read_manifest(spark, final)
    if (existing and not force and existing.get("config_hash") == config_hash
            and existing.get("inputs") == inputs):
        return {**existing, "skipped": True}
    base = {"stage": stage, "config_hash": config_hash, "inputs": inputs, "config": config,
            "versions": versions()}
    return {**publish(spark, final, write, base), "skipped": False}


def versions() -> dict[str, str]:
    """Installed versions of the stack, read from package metadata (no heavy imports)."""
    import platform
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("pyspark", "numpy", "pyarrow", "pandas", "scikit-learn", "imbalanced-learn",
                 "tensorflow-cpu", "tensorflow", "horovod"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
