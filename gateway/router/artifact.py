"""A router artifact as bytes: its files, its content hash and its version string.

An artifact is the directory `switchyard train` writes (`router.json` + `router.npz`). Its
**version** is `<name>@<first 12 hex of the content hash>`, e.g. `default@3f2a9c01b7de`: the name
says where it came from (the directory it was promoted from), the hash says exactly what it is, so
two replicas reporting the same version serve byte-identical routers.

The hash covers the files' names and bytes, in name order, so it does not depend on where the
directory lives or on file times. `pack`/`unpack` turn an artifact into one blob for the store
(an uncompressed zip: the npz is compressed already) and check the hash on the way back.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gateway.errors import InputError

# What `load_router` reads; nothing else in the directory is part of the router.
ARTIFACT_FILES = ("router.json", "router.npz")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that packing the same files gives the same bytes


class ArtifactError(InputError):
    """An artifact that is incomplete, or a blob whose bytes do not match its hash."""


def content_hash(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def version_string(name: str, digest: str) -> str:
    return f"{name}@{digest[:12]}"


@dataclass(frozen=True)
class Artifact:
    name: str
    files: Mapping[str, bytes]
    digest: str  # sha256 hex of `files`

    @property
    def version(self) -> str:
        return version_string(self.name, self.digest)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())

    @classmethod
    def of(cls, name: str, files: Mapping[str, bytes]) -> Artifact:
        missing = [f for f in ARTIFACT_FILES if f not in files]
        if missing:
            raise ArtifactError(f"artifact '{name}' lacks {', '.join(missing)}")
        kept = {f: bytes(files[f]) for f in ARTIFACT_FILES}
        return cls(name, MappingProxyType(kept), content_hash(kept))

    @classmethod
    def read(cls, directory: str | Path, name: str | None = None) -> Artifact:
        root = Path(directory)
        missing = [f for f in ARTIFACT_FILES if not (root / f).is_file()]
        if missing:
            raise ArtifactError(f"{root}: not a router artifact (no {', '.join(missing)})")
        return cls.of(name or root.resolve().name, {f: (root / f).read_bytes() for f in ARTIFACT_FILES})

    def write(self, directory: str | Path) -> Path:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for f, data in self.files.items():
            (root / f).write_bytes(data)
        return root

    def pack(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for f in sorted(self.files):
                z.writestr(zipfile.ZipInfo(f, _ZIP_TIME), self.files[f])
        return buf.getvalue()

    @classmethod
    def unpack(cls, blob: bytes, name: str, digest: str) -> Artifact:
        """The artifact in a stored blob, refused unless its content hash is `digest`."""
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                files = {f: z.read(f) for f in z.namelist()}
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ArtifactError(f"stored router {version_string(name, digest)} is unreadable: {exc}") from exc
        artifact = cls.of(name, files)
        if artifact.digest != digest:
            raise ArtifactError(f"stored router {version_string(name, digest)} does not match its hash "
                                f"(got {artifact.digest[:12]})")
        return artifact
