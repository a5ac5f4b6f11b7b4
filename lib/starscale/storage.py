"""The only code that touches output paths: atomic publish, manifests, input fingerprints.

Two ways in, one for each side of the job:
- with a SparkSession (stages on the driver): Hadoop's FileSystem API through the session's
  JVM, so the same code works on a local disk, HDFS or S3. Every published folder holds its
  ``_MANIFEST.json``, written last; a folder without one is never read as an input. Local
  disks and HDFS (a folder rename is atomic): a stage writes into ``<output>._staging``, puts
  its manifest there last, then swaps the staging folder into place with renames. Object
  stores (a rename is copy + delete): a stage writes a new version folder
  ``<output>/v-<utc>-<id>/`` and then ``<output>/_MANIFEST.json``, whose ``data_version``
  names it, in one single-object write; older versions are deleted only after that.
  Either way a kill leaves the previous output readable and complete.
- without one (Horovod ranks, the results table, the report's files): pyarrow's filesystems,
  resolved by ``filesystem(path)``; ``write_bytes`` writes a temp file and renames it over the
  target so readers see the old or the new file, never half of one.

Readers of a published folder go through ``data_dir`` (or ``resolve`` with a manifest already
read): ``<output>/<data_version>`` when the manifest names a version, else ``<output>``. Which
paths exist is decided by starscale.layout; this module only reads and writes them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

MANIFEST = "_MANIFEST.json"
STAGING_SUFFIX = "._staging"
OLD_SUFFIX = "._old"
LEASE_SUFFIX = "._lease"
BREAK_LEASE_ENV = "STARSCALE_BREAK_LEASE"     # "1": break a lease reported stale (see acquire_lease)


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


# --------------------------------------------------------------------------- pyarrow (no Spark)
def filesystem(path: str):
    """(pyarrow FileSystem, path inside it) for a local path (plain or file:) or a URI
    (hdfs://, s3://)."""
    from pyarrow import fs as pafs
    local = local_path(path)
    if local is not None:
        return pafs.LocalFileSystem(), local
    return pafs.FileSystem.from_uri(path)


def is_local_fs(fs) -> bool:
    from pyarrow import fs as pafs
    return isinstance(fs, pafs.LocalFileSystem)


def file_exists(path: str) -> bool:
    from pyarrow import fs as pafs
    fs, target = filesystem(path)
    return fs.get_file_info(target).type != pafs.FileType.NotFound


def read_bytes(path: str) -> bytes | None:
    """The bytes of a file, or None when there is none."""
    if not file_exists(path):
        return None
    fs, target = filesystem(path)
    with fs.open_input_stream(target) as src:
        return src.read()


def write_bytes(path: str, data: bytes | None = None, write: Callable[[Any, str], None] | None
                = None) -> str:
    """Write a file atomically: a hidden temp name in the same folder (readers and listings skip
    names starting with '.'), then a rename over the target. Either data, or write(fs, tmp_path)
    to produce the temp file (e.g. pyarrow.parquet.write_table). Creates the folder."""
    fs, target = filesystem(path)
    folder, name = target.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"
    try:
        if write is not None:
            write(fs, tmp)
        else:
            with fs.open_output_stream(tmp) as out:
                out.write(data)
        fs.move(tmp, target)            # a rename: readers see the old or the new file
    finally:
        from pyarrow import fs as pafs
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
    return path


def delete_file(path: str) -> None:
    """Remove a file; nothing when it is not there."""
    fs, target = filesystem(path)
    try:
        fs.delete_file(target)
    except (FileNotFoundError, OSError):
        pass


def make_dirs(path: str) -> None:
    fs, target = filesystem(path)
    fs.create_dir(target, recursive=True)


def empty_dir(path: str) -> None:
    """Delete everything inside a folder (created when missing)."""
    fs, target = filesystem(path)
    fs.create_dir(target, recursive=True)
    fs.delete_dir_contents(target, missing_dir_ok=True)


def copy_file(src: str, dst: str) -> None:
    """Copy one file across filesystems (e.g. a checkpoint into a staging folder)."""
    sfs, spath = filesystem(src)
    dfs, dpath = filesystem(dst)
    dfs.create_dir(dpath.rsplit("/", 1)[0], recursive=True)
    with sfs.open_input_stream(spath) as i, dfs.open_output_stream(dpath) as o:
        o.write(i.read())


# --------------------------------------------------------------------------- Hadoop (Spark)
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
    """Write a small text file whole: a reader sees the old text or the new one, and a file
    that existed never goes missing in between (a manifest is what readers resolve).
    Local disk: a hidden temp file renamed over the target (rename(2) replaces atomically).
    Object stores: one create, which S3A and the GCS connector make visible only on close (a
    single PUT). HDFS and the rest: a temp file, then delete + rename (there starscale writes
    manifests only into staging folders, which no reader opens)."""
    final = qualify(path)
    local = local_path(final)
    if local is not None:
        folder, name = os.path.split(local)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            stale_crc = os.path.join(folder, f".{name}.crc")   # Hadoop's checksum of old bytes
            if os.path.exists(stale_crc):
                os.remove(stale_crc)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    fs, jpath = _fs(spark, final)
    if not renames_atomic(final):
        out = fs.create(jpath, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return
    tmp = spark._jvm.org.apache.hadoop.fs.Path(final + ".tmp")
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


def list_dirs(spark, path: str) -> list[str]:
    """Sub-folder names of path (none when it does not exist), sorted; markers ('_', '.') and
    staging / old folders of an unfinished publish are skipped."""
    fs, jpath = _fs(spark, path)
    if not fs.exists(jpath):
        return []
    names = []
    for status in fs.listStatus(jpath):
        name = status.getPath().getName()
        if (status.isDirectory() and not name.startswith(("_", "."))
                and not name.endswith((STAGING_SUFFIX, OLD_SUFFIX))):
            names.append(name)
    return sorted(names)


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


# Object-store publish: the manifest's pointer to the version folder that holds the data.
VERSION_KEY = "data_version"
VERSION_NAME = re.compile(r"v-\d{8}T\d{6}Z-[0-9a-f]{8}")     # v-<utc>-<8 hex>


def resolve(output: str, manifest: dict | None) -> str:
    """The folder a published output's data lives in, given its manifest: <output>/<version>
    when the manifest names a version (object-store publish), else <output> itself (local
    disk, HDFS, older outputs, or no manifest). A name that is not a version folder's is a
    ValueError: a manifest is data and never steers a reader outside its folder."""
    final = qualify(output)
    version = (manifest or {}).get(VERSION_KEY)
    if version is None:
        return final
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise ValueError(f"{final}/{MANIFEST}: {VERSION_KEY} {version!r} is not a version "
                         f"folder name (v-<utc>-<id>)")
    return f"{final}/{version}"


def data_dir(spark, output: str) -> str:
    """resolve(output, its manifest now): the one way to find a published folder's files.
    spark None: the manifest is read through pyarrow (Horovod ranks, code without a session).
    A folder without a manifest (a staging or version folder, a raw input) is itself."""
    if spark is not None:
        return resolve(output, read_manifest(spark, output))
    data = read_bytes(qualify(output) + "/" + MANIFEST)
    return resolve(output, json.loads(data) if data else None)


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


RAW_EDGE_BYTES = 1 << 20      # raw inputs: size + mtime + sha256 of the first and last MiB


def _edge_hash(fs, jpath, size: int, jvm) -> str:
    """sha256 of a file's first and last RAW_EDGE_BYTES (the whole file when it is smaller)."""
    digest = hashlib.sha256()
    spans = [(0, min(size, RAW_EDGE_BYTES))]
    if size > RAW_EDGE_BYTES:
        start = max(RAW_EDGE_BYTES, size - RAW_EDGE_BYTES)
        spans.append((start, size - start))
    stream = fs.open(jpath)
    try:
        for offset, length in spans:
            stream.seek(offset)
            # py4j cannot fill a Python buffer: commons-io (on Spark's classpath) returns a byte[]
            digest.update(bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream, length)))
    finally:
        stream.close()
    return digest.hexdigest()[:16]


def raw_fingerprints(spark, patterns: list[str]) -> list[dict]:
    """Identity of raw input files by content: path, size, modification time and a sha256 of
    the first and last MiB of each (RAW_EDGE_BYTES; whole file below 1 MiB), so a file replaced
    with one of the same size and mtime (cp -p, rsync -t) is still seen as changed when its
    edges differ. A change confined to the middle of a file over 2 MiB that keeps size and
    mtime is not detected: use --force for that."""
    out = []
    for pattern in patterns:
        files = list_files(spark, pattern)
        if not files:
            raise ValueError(f"input not found or empty: {pattern}")
        for p, size, mtime in files:
            fs, jpath = _fs(spark, p)
            out.append({"path": p, "size": size, "mtime_ms": mtime,
                        "edges_sha256": _edge_hash(fs, jpath, size, spark._jvm)})
    return out


def code_fingerprint(module: str) -> dict[str, str]:
    """The starscale version and a sha256 of the source of `module` and every starscale module
    it imports, transitively (read through the import system, so it works from the --py-files
    zip too): a code change in what a stage runs makes its output stale."""
    import ast
    import importlib.util
    from starscale import __version__
    seen: set[str] = set()
    todo = [module]
    sources: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in seen or not (name == "starscale" or name.startswith("starscale.")):
            continue
        seen.add(name)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError, ValueError):   # a name imported from a module
            continue
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_source"):
            continue
        source = spec.loader.get_source(name) or ""
        sources[name] = source
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                   package) if node.level else node.module or ""
                todo.append(base)
                todo.extend(f"{base}.{a.name}" for a in node.names)   # submodules named
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return {"starscale": __version__, "module": module, "sha256": digest.hexdigest()[:16]}


def _recover(spark, output: str) -> None:
    """Finish a swap that a kill interrupted between its two renames."""
    final = qualify(output)
    old = final + OLD_SUFFIX
    if not exists(spark, final) and exists(spark, old):
        rename(spark, old, final)
    elif exists(spark, old):
        delete(spark, old)


class LeaseHeld(RuntimeError):
    """Another run holds the output's lease."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, owned by another user
        return True
    return True


def lease_is_stale(holder: dict) -> bool:
    """A lease is provably stale only when its holder ran on this host and its pid is gone;
    a holder on another host cannot be checked from here."""
    import socket
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))


def acquire_lease(spark, output: str, stage: str, run_id: str | None = None,
                  break_stale: bool | None = None) -> dict:
    """Take the exclusive lease on an output folder: ``<output>._lease``, created with
    overwrite=false (an atomic create-if-absent on local disks and HDFS; see the README for S3).
    It holds host, pid, start time and run id; a second writer gets LeaseHeld naming the holder.

    A provably stale lease (its holder ran on this host and its pid is gone: a killed run) is
    broken with a note on stderr. A lease held from another host cannot be checked from here:
    break_stale (default: $STARSCALE_BREAK_LEASE=1) breaks it, on the operator's word."""
    import socket
    import sys
    if break_stale is None:
        break_stale = os.environ.get(BREAK_LEASE_ENV) == "1"
    final = qualify(output)
    lease_path = final + LEASE_SUFFIX
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "stage": stage,
              "run_id": run_id or uuid.uuid4().hex[:12], "output": final,
              "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    fs, jpath = _fs(spark, lease_path)
    fs.mkdirs(jpath.getParent())
    body = json.dumps(holder, sort_keys=True).encode("utf-8")
    for attempt in (0, 1):
        try:
            _create_exclusive(fs, jpath, lease_path, body)
            return holder
        except Exception as exc:                   # FileExistsError / py4j FileAlreadyExists
            if not fs.exists(jpath):
                raise
            try:
                current = json.loads(read_text(spark, lease_path))
            except Exception:                      # noqa: BLE001 - half-written or unreadable
                current = {}
            who = (f"{current.get('stage')} run {current.get('run_id')} (host {current.get('host')}, "
                   f"pid {current.get('pid')}, since {current.get('started_utc')})"
                   if current else "an unreadable lease")
            stale = lease_is_stale(current) if current else False
            if (stale or break_stale) and not attempt:
                print(f"starscale: breaking the {'stale ' if stale else ''}lease {lease_path} of "
                      f"{who}", file=sys.stderr, flush=True)
                delete(spark, lease_path)
                continue
            hint = (f"if that run is dead, rerun with {BREAK_LEASE_ENV}=1 to break the lease"
                    if current.get("host") != socket.gethostname() or not current else
                    "wait for it to finish")
            raise LeaseHeld(f"{final} is being written by {who}; lease {lease_path}: {hint}") \
                from exc
    raise LeaseHeld(f"could not take the lease {lease_path}")


def _create_exclusive(fs, jpath, path: str, body: bytes) -> None:
    """Create a file that must not exist yet, atomically: O_CREAT|O_EXCL on a local disk (Hadoop's
    local create(overwrite=false) checks, then creates), create(overwrite=false) elsewhere (one
    NameNode operation on HDFS)."""
    local = local_path(qualify(path))
    if local is not None:
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        return
    out = fs.create(jpath, False)
    try:
        out.write(bytearray(body))
    finally:
        out.close()


def release_lease(spark, output: str, holder: dict) -> None:
    """Remove the lease when it is still ours (a broken-and-retaken lease is left alone)."""
    lease_path = qualify(output) + LEASE_SUFFIX
    try:
        current = json.loads(read_text(spark, lease_path))
    except Exception:                              # noqa: BLE001
        return
    if current.get("run_id") == holder["run_id"] and current.get("pid") == holder["pid"]:
        delete(spark, lease_path)


# Stores whose folder rename is one atomic metadata operation; everything else (s3a, gs, abfs,
# wasb, ...) renames by copy + delete and gets the versioned protocol below.
ATOMIC_RENAME_SCHEMES = ("", "file", "hdfs", "viewfs")
PUBLISHING = "_PUBLISHING.json"   # versioned publish: "starscale is publishing into this folder"
# "1": the versioned (object-store) protocol on every store, local disks included. For tests and
# drills of the object-store path on a laptop; not a setting for production runs.
VERSIONED_PUBLISH_ENV = "STARSCALE_VERSIONED_PUBLISH"


def renames_atomic(path: str) -> bool:
    return urlparse(qualify(path)).scheme in ATOMIC_RENAME_SCHEMES


def versioned_publish(path: str) -> bool:
    """Whether publish writes version folders + a pointer manifest here (object stores, or any
    store under $STARSCALE_VERSIONED_PUBLISH=1) rather than swapping a staging folder in."""
    return os.environ.get(VERSIONED_PUBLISH_ENV) == "1" or not renames_atomic(path)


def new_version() -> str:
    """A version folder name: v-<utc>-<8 hex>, so names sort by time and never collide."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"v-{stamp}-{uuid.uuid4().hex[:8]}"


class _HadoopOps:
    """The few filesystem operations publish needs, through Spark's Hadoop FileSystem (a test
    passes a fake with the same methods: tests/test_reliability.py)."""

    def __init__(self, spark):
        self.spark = spark

    def exists(self, path: str) -> bool:
        return exists(self.spark, path)

    def delete(self, path: str) -> None:
        delete(self.spark, path)

    def rename(self, src: str, dst: str) -> None:
        rename(self.spark, src, dst)

    def write_text(self, path: str, text: str) -> None:
        write_text(self.spark, path, text)

    def read_text(self, path: str) -> str:
        return read_text(self.spark, path)

    def children(self, path: str) -> list[str]:
        fs, jpath = _fs(self.spark, path)
        if not fs.exists(jpath):
            return []
        return sorted(f"{qualify(path)}/{st.getPath().getName()}" for st in fs.listStatus(jpath))


def _manifest_of(ops, final: str) -> dict | None:
    try:
        return json.loads(ops.read_text(final + "/" + MANIFEST))
    except FileNotFoundError:
        return None


def _check_ours(ops, final: str) -> None:
    """Publish replaces only what starscale wrote: an existing folder (or file) at the output
    path without a manifest is someone else's data, unless it is a publish of ours that a kill
    interrupted on an object store (its _PUBLISHING.json marker)."""
    if (ops.exists(final) and _manifest_of(ops, final) is None
            and not ops.exists(final + "/" + PUBLISHING)):
        raise ValueError(f"output {final} exists and has no starscale {MANIFEST}: refusing to "
                         f"replace data starscale did not write (choose another output path, "
                         f"or remove it yourself)")


def publish(spark, output: str, write: Callable[[str], dict[str, Any]],
            manifest_base: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """Run write(folder) → stage counts into a fresh folder, then publish it as output.

    Holds the output's lease (acquire_lease) from start to end. An existing output without a
    manifest is never replaced. Local disks and HDFS: write gets <output>._staging; the
    manifest goes into it last, then two renames swap it in (atomic; a kill between them is
    finished by _recover). Object stores (versioned_publish): write gets a new version folder
    inside the output and the manifest naming it is written last, in one single-object write
    (publish_versioned). Either way readers see the old complete output or the new one.
    """
    final = qualify(output)
    lease = acquire_lease(spark, final, str(manifest_base.get("stage")), run_id)
    try:
        versioned = versioned_publish(final)
        if not versioned:
            _recover(spark, final)
        return publish_with(_HadoopOps(spark), final, write, manifest_base, not versioned)
    finally:
        release_lease(spark, final, lease)


def publish_with(ops, final: str, write: Callable[[str], dict[str, Any]],
                 manifest_base: dict[str, Any], atomic_rename: bool) -> dict[str, Any]:
    """publish's steps on a filesystem `ops` (_HadoopOps or a test's fake): the rename swap
    when atomic_rename, else publish_versioned."""
    _check_ours(ops, final)
    if atomic_rename:
        target, version = final + STAGING_SUFFIX, None
        ops.delete(target)               # leftovers of a killed run (we hold the lease)
    else:
        version = new_version()
        target = final + "/" + version
        ops.write_text(final + "/" + PUBLISHING, json.dumps({"publishing": version}))
        _remove_unreferenced(ops, final)     # orphans of a killed run (we hold the lease)
    started = time.time()
    try:
        produced = write(target)
    except Exception:
        if version is not None:
            _abandon(ops, final, target)
        raise
    manifest = {
        **manifest_base,
        **produced,
        "output": final,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 3),
        "complete": True,
    }
    if version is not None:
        manifest[VERSION_KEY] = version
    if isinstance(manifest.get("config"), dict):       # a second guard: to_dict redacts already
        from starscale.config import redact_secrets
        manifest["config"] = redact_secrets(manifest["config"])
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    _check_ours(ops, final)              # nothing foreign appeared while we wrote
    if atomic_rename:
        ops.write_text(target + "/" + MANIFEST, text)
        if ops.exists(final):
            ops.rename(final, final + OLD_SUFFIX)
        ops.rename(target, final)
        ops.delete(final + OLD_SUFFIX)
    else:
        publish_versioned(ops, final, text)
    return manifest


def publish_versioned(ops, final: str, manifest_text: str) -> None:
    """Object stores (a rename is copy + delete; only a single-object write is atomic): the new
    version folder is complete, so move the pointer, the manifest, in one write; then delete
    what it no longer names (older versions, the top-level data of an unversioned output) and
    the marker. Before the manifest write a reader resolves to the old complete version, after
    it to the new one; a kill anywhere leaves one of them and debris that the next publish
    removes (publish_with: _remove_unreferenced, under the lease)."""
    ops.write_text(final + "/" + MANIFEST, manifest_text)
    _remove_unreferenced(ops, final)
    ops.delete(final + "/" + PUBLISHING)


def _remove_unreferenced(ops, final: str) -> None:
    """Delete every child of a versioned output that no reader can reach: all but the
    manifest, the marker and the data the manifest names (its version folder; for a manifest
    without a version, the top-level data it describes, keeping only version folders out)."""
    manifest = _manifest_of(ops, final)
    version = (manifest or {}).get(VERSION_KEY)
    for child in ops.children(final):
        name = child.rsplit("/", 1)[1]
        if name in (MANIFEST, PUBLISHING) or name == version:
            continue
        if manifest is not None and version is None and not VERSION_NAME.fullmatch(name):
            continue                     # an unversioned output's own data: still read
        ops.delete(child)


def _abandon(ops, final: str, target: str) -> None:
    """A write that failed (not a kill): drop its version folder, and the marker and the folder
    when nothing was published there before."""
    ops.delete(target)
    ops.delete(final + "/" + PUBLISHING)
    if not ops.children(final):
        ops.delete(final)


def run_stage(spark, *, stage: str, output: str, config_hash: str, config: dict,
              upstream: dict[str, str] | None = None, raw_inputs: list[str] | None = None,
              force: bool = False, write: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Publish one stage's output, or skip when its manifest matches config and inputs.

    upstream maps each input path to the stage that produces it (its manifest is required);
    raw_inputs are files/globs fingerprinted by content (raw_fingerprints). The manifest also
    records code_fingerprint(write's module): a new starscale version or a change to the code the
    stage runs re-runs it.
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
    code = code_fingerprint(getattr(write, "__module__", None) or "starscale")
    _recover(spark, final)
    existing = read_manifest(spark, final)
    if (existing and not force and existing.get("config_hash") == config_hash
            and existing.get("inputs") == inputs and existing.get("code") == code):
        return {**existing, "skipped": True}
    base = {"stage": stage, "config_hash": config_hash, "inputs": inputs, "config": config,
            "code": code, "versions": versions()}
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
