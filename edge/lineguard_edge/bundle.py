"""A line's exported bundle on disk: one folder, checked before anything in it is used.

```
manifest.json   format, format_version, line, version, kind, runtime, precision, created, parity,
                and the SHA-256 of every other file
spec.json       what the runtime needs: inputs and outputs of the graph, image size and pixel limit,
                the threshold, the heatmap's display range, classes and severity, feature names
card.json       the line's model card as stored (for people; the runtime reads spec.json)
model.onnx      the graph (runtime "onnx"), or model.xml + model.bin (runtime "openvino")
```

A bundle whose manifest is missing or of another format version, or whose files are missing or differ
from their checksums, is refused with a :class:`CorruptModelError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineguard_edge.errors import ConfigError, CorruptModelError

FORMAT = "lineguard-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPEC = "spec.json"
RUNTIMES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    folder: Path
    manifest: dict[str, Any]
    spec: dict[str, Any]

    @property
    def line(self) -> str:
        return str(self.manifest["line"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def runtime(self) -> str:
        return str(self.manifest["runtime"])

    def graph_file(self) -> Path:
        return self.folder / RUNTIMES[self.runtime][0]


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise CorruptModelError(f"{path}: missing; this folder is not a complete LineGuard bundle") from err
    except (OSError, ValueError) as err:
        raise CorruptModelError(f"{path}: not readable JSON ({err}); export the line again") from err
    if not isinstance(data, dict):
        raise CorruptModelError(f"{path}: expected a JSON object; export the line again")
    return data


def read(folder: str | os.PathLike[str]) -> Bundle:
    """The bundle in ``folder``, every file checked against the manifest's checksums."""
    root = Path(folder)
    manifest = _json(root / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise CorruptModelError(f"{root / MANIFEST}: not a LineGuard bundle (format {manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CorruptModelError(
            f"{root / MANIFEST}: bundle format version {manifest.get('format_version')!r}, but this runtime reads "
            f"version {FORMAT_VERSION}: export the line again with this LineGuard, or install the matching "
            "lineguard-edge"
        )
    runtime = manifest.get("runtime")
    if runtime not in RUNTIMES:
        raise CorruptModelError(f"{root / MANIFEST}: unknown runtime {runtime!r}; expected one of {sorted(RUNTIMES)}")
    files = manifest.get("files")
    if not isinstance(files, dict) or SPEC not in files or not set(RUNTIMES[runtime]) <= set(files):
        raise CorruptModelError(f"{root / MANIFEST}: its file list lacks {SPEC} or the {runtime} graph")
    for name, digest in files.items():
        path = root / name
        if Path(name).name != name:
            raise CorruptModelError(f"{root / MANIFEST}: file name {name!r} leaves the bundle's folder")
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise CorruptModelError(f"{path}: missing from the bundle (the manifest lists it)") from err
        if sha256(data) != digest:
            raise CorruptModelError(f"{path}: its checksum differs from the manifest's: the file is damaged or changed")
    return Bundle(root, manifest, _json(root / SPEC))


def write(folder: Path, files: dict[str, bytes], manifest: dict[str, Any]) -> Bundle:
    """Write ``files`` and, last, the manifest with their checksums; ``folder`` must be empty or absent."""
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder}: not empty; export into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    full["files"] = {name: sha256(data) for name, data in sorted(files.items())}
    (folder / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    return read(folder)
