"""Generate and import Python stubs for Feeder's protobuf contract at run time.

Why at run time: the device contract lives in ``proto/feeder/v1/*.proto`` and the Rust
services compile it with their own build. The Python tools must speak exactly the same
wire format, so rather than checking in generated ``*_pb2.py`` files that could drift
from the ``.proto`` sources, we run ``grpc_tools.protoc`` (bundled with grpcio-tools;
the machine has no system protoc) on the repository's ``proto/`` directory and import
the result.

Generated code is cached under ``$FEEDER_PY_CACHE`` (default ``~/.cache/feeder``) in a
directory named by a hash of the ``.proto`` sources and the grpcio-tools / protobuf
versions, so an edit to a ``.proto`` file or a version bump regenerates, and concurrent
callers never see a half-written directory (it is generated aside and renamed into
place). If the cache is not writable, a temporary directory is used instead.

Usage::

    from feeder_proto_gen import load_stubs
    pb = load_stubs()
    frame = pb.frame_pb2.Frame(sent_at_ms=1)
    stub = pb.ingest_pb2_grpc.IngestStub(channel)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProtoStubs", "ProtoGenError", "default_proto_dir", "generate", "load_stubs"]

# Files of the v1 contract, relative to the proto root, in dependency order.
PROTO_FILES = ("feeder/v1/frame.proto", "feeder/v1/ingest.proto")


class ProtoGenError(RuntimeError):
    """protoc failed or the generated modules could not be imported."""


@dataclass(frozen=True)
class ProtoStubs:
    """The imported generated modules."""

    frame_pb2: types.ModuleType
    ingest_pb2: types.ModuleType
    ingest_pb2_grpc: types.ModuleType
    out_dir: Path


def default_proto_dir() -> Path:
    """``$FEEDER_PROTO_DIR``, else the repository's ``proto/`` (two levels above this file)."""
    env = os.environ.get("FEEDER_PROTO_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / "proto"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _cache_key(proto_dir: Path) -> str:
    h = hashlib.sha256()
    for rel in PROTO_FILES:
        h.update(rel.encode())
        h.update(b"\0")
        h.update((proto_dir / rel).read_bytes())
        h.update(b"\0")
    h.update(f"grpcio-tools={_version('grpcio-tools')};protobuf={_version('protobuf')}".encode())
    return h.hexdigest()[:24]


def _run_protoc(proto_dir: Path, out_dir: Path) -> None:
    try:
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ProtoGenError(
            "grpcio-tools is not installed; run tests/setup-python.sh and use its python"
        ) from e

    # protoc needs the well-known types (google/protobuf/*.proto) shipped in grpc_tools.
    wkt = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={wkt}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise ProtoGenError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    # Make feeder/ and feeder/v1/ regular packages so they win over any namespace
    # package called "feeder" elsewhere on sys.path.
    for pkg in ("feeder", "feeder/v1"):
        init = out_dir / pkg / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()


def generate(proto_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Generate stubs (or reuse cached ones); return the directory to put on sys.path."""
    proto_dir = Path(proto_dir) if proto_dir else default_proto_dir()
    missing = [rel for rel in PROTO_FILES if not (proto_dir / rel).is_file()]
    if missing:
        raise ProtoGenError(f"proto files not found under {proto_dir}: {', '.join(missing)}")

    key = _cache_key(proto_dir)
    base = Path(cache_dir) if cache_dir else Path(
        os.environ.get("FEEDER_PY_CACHE", Path.home() / ".cache" / "feeder")
    ) / "pystubs"
    final = base / key
    if (final / "feeder" / "v1" / "ingest_pb2_grpc.py").is_file():
        return final

    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
    except OSError:
        # Unwritable cache: generate into a private temp dir for this process only.
        tmp = Path(tempfile.mkdtemp(prefix="feeder-pystubs-"))
        _run_protoc(proto_dir, tmp)
        return tmp

    try:
        _run_protoc(proto_dir, staging)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process won the race; its output is identical.
            if not (final / "feeder" / "v1" / "ingest_pb2_grpc.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_stubs(proto_dir: Path | None = None, cache_dir: Path | None = None) -> ProtoStubs:
    """Generate (if needed) and import ``feeder.v1`` frame/ingest modules."""
    out_dir = generate(proto_dir, cache_dir)
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    try:
        frame_pb2 = importlib.import_module("feeder.v1.frame_pb2")
        ingest_pb2 = importlib.import_module("feeder.v1.ingest_pb2")
        ingest_pb2_grpc = importlib.import_module("feeder.v1.ingest_pb2_grpc")
    except Exception as e:
        raise ProtoGenError(f"cannot import stubs generated in {out_dir}: {e}") from e
    loaded_from = Path(frame_pb2.__file__).resolve().parent.parent.parent
    if loaded_from != out_dir.resolve():
        raise ProtoGenError(
            f"imported feeder.v1 from {loaded_from}, expected {out_dir}: "
            "another 'feeder' package shadows the generated stubs"
        )
    return ProtoStubs(frame_pb2, ingest_pb2, ingest_pb2_grpc, out_dir)


if __name__ == "__main__":
    stubs = load_stubs()
    print(stubs.out_dir)
