"""The versioned model store: ``<root>/<line>/<version>/{card.json, model.safetensors}`` + a pointer.

The root is a local folder by default, or any URI ``pyarrow.fs`` understands (``file://``, ``s3://``,
``gs://``, ``hdfs://``), so the same code serves a laptop and a cluster.

- Versions are immutable. A version is written into a staging folder and renamed into place, so a
  reader never sees half a version (on object stores, where rename is copy + delete, the card is
  written last and a version without a card is ignored).
- ``<line>/CURRENT`` names the version in service. Promotion replaces it atomically: a rename on local
  disks, a single PUT on object stores.
- Tensors are safetensors and metadata JSON; nothing is ever unpickled. Every file's SHA-256 is in the
  card and checked on load, so a corrupted version is refused with a clear error.
- Line and version names are validated, so no path ever leaves the root.
- ``<version>/bundles/<format>/`` keeps the version exported for the edge runtime (``lineguard export
  --to-store``, ``lineguard fit --export``): added after the version, replaced by a new export, never
  copied to a derived version (its spec holds the threshold). The service hands it out at
  ``GET /v1/lines/{line}/bundle``.

The store moves bytes and NumPy arrays, never torch tensors (light processes read it):
:mod:`lineguard.registry.tensors` (de)serialises torch state dicts for the processes that have torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from pydantic import ValidationError

from lineguard.errors import ConfigError, CorruptModelError, NotFoundError, StoreError
from lineguard.registry.card import ModelCard, utc_now
from lineguard.registry.names import check_line_name, check_version_name, is_line_name, is_version_name
from lineguard_edge import bundle as bundle_format

log = logging.getLogger(__name__)

DEFAULT_STORE = "./lineguard-store"  # the default of `lineguard --store` and of the service's `store` arg
TENSORS_FILE = "model.safetensors"
CARD_FILE = "card.json"
BUNDLES_DIR = "bundles"  # <version>/bundles/<format>/: the version exported for the edge (lineguard export)
BUNDLE_FORMATS = tuple(bundle_format.RUNTIMES)  # the bundle format's own list (lineguard_edge.bundle)
BUNDLE_MANIFEST = bundle_format.MANIFEST  # written last: its presence marks a stored bundle complete
CURRENT_FILE = "CURRENT"


class ModelStore:
    def __init__(self, uri: str | Path) -> None:
        text = str(uri)
        if "://" in text:
            self.fs, root = pafs.FileSystem.from_uri(text)
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, root, self.local = pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()), True
        self.root = root.rstrip("/")
        self.uri = text

    def __repr__(self) -> str:
        return f"ModelStore({self.uri!r})"

    # --- paths (validated components only) ----------------------------------------------------------
    def _line_dir(self, line: str) -> str:
        return f"{self.root}/{check_line_name(line)}"

    def _version_dir(self, line: str, version: str) -> str:
        return f"{self._line_dir(line)}/{check_version_name(version)}"

    def _exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as stream:
                return bytes(stream.read())
        except FileNotFoundError as err:
            raise StoreError(f"{path} is missing from the model store") from err

    def _write(self, path: str, data: bytes, atomic: bool = True) -> None:
        if atomic and self.local:
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as stream:
                stream.write(data)
            self.fs.move(tmp, path)
        else:
            with self.fs.open_output_stream(path) as stream:
                stream.write(data)

    # --- reading -----------------------------------------------------------------------------------
    def readable(self) -> bool:
        """True when the root can be listed (it may not exist yet: an empty store is readable)."""
        try:
            info = self.fs.get_file_info(self.root)
            if info.type == pafs.FileType.Directory:
                self.fs.get_file_info(pafs.FileSelector(self.root))
            return True
        except OSError:
            return False

    def lines(self) -> list[str]:
        """Lines that have a version in service, sorted."""
        if not self._exists(self.root):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root))
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if is_line_name(n) and self._exists(f"{self.root}/{n}/{CURRENT_FILE}"))

    def versions(self, line: str) -> list[str]:
        """Complete versions of ``line`` (those with a card), oldest first."""
        line_dir = self._line_dir(line)
        if not self._exists(line_dir):
            raise NotFoundError(f"unknown line {line!r}: `lineguard lines` lists the lines in {self.uri}")
        infos = self.fs.get_file_info(pafs.FileSelector(line_dir))
        found = [i.base_name for i in infos if i.type == pafs.FileType.Directory and is_version_name(i.base_name)]
        complete = [v for v in found if self._exists(f"{line_dir}/{v}/{CARD_FILE}")]
        return sorted(complete, key=lambda v: int(v[1:]))

    def current_version(self, line: str) -> str:
        path = f"{self._line_dir(line)}/{CURRENT_FILE}"
        if not self._exists(path):
            raise NotFoundError(f"unknown line {line!r}: `lineguard lines` lists the lines in {self.uri}")
        try:
            return check_version_name(json.loads(self._read(path))["version"])
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptModelError(f"{path} does not name a version ({err}): `lineguard promote {line} vN`") from err

    def read_card(self, line: str, version: str | None = None) -> ModelCard:
        version = version or self.current_version(line)
        path = f"{self._version_dir(line, version)}/{CARD_FILE}"
        if not self._exists(path):
            raise NotFoundError(f"line {line!r} has no version {version!r}: `lineguard versions {line}` lists them")
        try:
            return ModelCard.model_validate_json(self._read(path))
        except ValidationError as err:
            raise CorruptModelError(f"the card of line {line!r} {version} is not valid: {err}") from err

    def read_tensor_bytes(self, card: ModelCard) -> bytes:
        """The version's safetensors file, after checking it against the SHA-256 in its card."""
        path = f"{self._version_dir(card.line, card.version)}/{TENSORS_FILE}"
        data = self._read(path)
        expected = card.files.get(TENSORS_FILE)
        actual = hashlib.sha256(data).hexdigest()
        if expected != actual:
            raise CorruptModelError(
                f"model file of line {card.line!r} version {card.version} fails its checksum "
                f"(card {str(expected)[:12]}..., file {actual[:12]}...): refit or promote another version"
            )
        return data

    def verify(self, card: ModelCard) -> None:
        """Check a version before it serves: its model file matches the card's checksum and is safetensors."""
        data = self.read_tensor_bytes(card)
        size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
        try:
            if not 0 < size <= len(data) - 8 or not isinstance(json.loads(data[8 : 8 + size]), dict):
                raise ValueError("no safetensors header")
        except ValueError as err:
            raise CorruptModelError(
                f"model file of line {card.line!r} version {card.version} is not valid safetensors ({err})"
            ) from err

    def read_arrays(self, card: ModelCard) -> dict[str, np.ndarray]:
        """The version's tensors as NumPy arrays (checksum-verified), without importing torch."""
        from safetensors.numpy import load as load_safetensors

        data = self.read_tensor_bytes(card)
        try:
            return load_safetensors(data)
        except Exception as err:
            raise CorruptModelError(
                f"model file of {card.line!r} {card.version} is not valid safetensors: {err}"
            ) from err

    def read_aux(self, name: str) -> bytes | None:
        """A service file beside the lines (``_keys/keys.json``), or None when there is none."""
        path = self._aux_path(name)
        return self._read(path) if self._exists(path) else None

    def write_aux(self, name: str, data: bytes) -> None:
        path = self._aux_path(name)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        self._write(path, data)

    def _aux_path(self, name: str) -> str:
        if not name.startswith("_") or ".." in name or name.startswith("_/"):
            raise ConfigError(f"service files live in folders starting with '_' (never a line): got {name!r}")
        return f"{self.root}/{name}"

    # --- exported bundles ----------------------------------------------------------------------------
    def _bundle_dir(self, line: str, version: str, fmt: str) -> str:
        if fmt not in BUNDLE_FORMATS:
            raise ConfigError(f"unknown bundle format {fmt!r}: {' or '.join(BUNDLE_FORMATS)}")
        return f"{self._version_dir(line, version)}/{BUNDLES_DIR}/{fmt}"

    def bundle_formats(self, line: str, version: str) -> list[str]:
        """The formats ``version`` of ``line`` has a complete exported bundle in."""
        return [f for f in BUNDLE_FORMATS if self._exists(f"{self._bundle_dir(line, version, f)}/{BUNDLE_MANIFEST}")]

    def write_bundle(self, line: str, version: str, fmt: str, files: dict[str, bytes]) -> None:
        """Keep the exported bundle of a stored version (``files``: the bundle's folder, manifest included),
        replacing an earlier export in that format. The manifest goes last, so a reader never sees half a
        bundle as complete; the edge runtime checks every file against it anyway."""
        self.read_card(line, version)  # refuses unknown versions
        if BUNDLE_MANIFEST not in files or any(Path(name).name != name for name in files):
            raise ConfigError(f"a bundle is flat files with a {BUNDLE_MANIFEST}; got {sorted(files)}")
        folder = self._bundle_dir(line, version, fmt)
        if self._exists(folder):
            self.fs.delete_dir(folder)
        self.fs.create_dir(folder, recursive=True)
        for name in sorted(files, key=lambda n: n == BUNDLE_MANIFEST):
            self._write(f"{folder}/{name}", files[name])

    def read_bundle(self, line: str, version: str, fmt: str) -> dict[str, bytes]:
        """The files of a stored bundle (the ones its manifest lists, and the manifest)."""
        folder = self._bundle_dir(line, version, fmt)
        if not self._exists(f"{folder}/{BUNDLE_MANIFEST}"):
            have = self.bundle_formats(line, version)
            raise NotFoundError(
                f"{line} {version} has no {fmt} bundle"
                + (f" (it has {', '.join(have)})" if have else "")
                + f": lineguard export {line} --version {version} --format {fmt} --to-store"
            )
        manifest = self._read(f"{folder}/{BUNDLE_MANIFEST}")
        try:
            names = list(json.loads(manifest)["files"])
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptModelError(f"{folder}/{BUNDLE_MANIFEST}: not a bundle manifest ({err}); export again") from err
        return {**{name: self._read(f"{folder}/{name}") for name in names}, BUNDLE_MANIFEST: manifest}

    # --- writing -----------------------------------------------------------------------------------
    def write_version(self, card: ModelCard, blob: bytes, promote: bool = True) -> ModelCard:
        """Store a new immutable version of ``card.line`` (``blob``: its safetensors file) and, by default, put
        it in service. Returns the card as stored: with its version number and file checksums."""
        line_dir = self._line_dir(card.line)
        self.fs.create_dir(line_dir, recursive=True)
        files = {TENSORS_FILE: hashlib.sha256(blob).hexdigest()}
        for _attempt in range(20):
            version = self._next_version(card.line)
            final = card.model_copy(update={"version": version, "files": files})
            if self._publish(line_dir, version, blob, final):
                break
        else:
            raise StoreError(f"could not allocate a new version of {card.line!r} (concurrent writers?)")
        log.info("stored %s %s in %s", card.line, version, self.uri)
        if promote:
            self.promote(card.line, version)
        return final

    def _next_version(self, line: str) -> str:
        line_dir = self._line_dir(line)
        infos = self.fs.get_file_info(pafs.FileSelector(line_dir))
        numbers = [int(i.base_name[1:]) for i in infos if is_version_name(i.base_name)]
        return f"v{max(numbers, default=0) + 1}"

    def _publish(self, line_dir: str, version: str, blob: bytes, card: ModelCard) -> bool:
        card_bytes = card.model_dump_json(indent=2).encode()
        target = f"{line_dir}/{version}"
        if not self.local:  # object stores: tensors first, the card (which marks completeness) last
            if self._exists(target):
                return False
            self._write(f"{target}/{TENSORS_FILE}", blob, atomic=False)
            self._write(f"{target}/{CARD_FILE}", card_bytes, atomic=False)
            return True
        staging = f"{line_dir}/.staging-{uuid.uuid4().hex}"
        self.fs.create_dir(staging)
        try:
            self._write(f"{staging}/{TENSORS_FILE}", blob, atomic=False)
            self._write(f"{staging}/{CARD_FILE}", card_bytes, atomic=False)
            self.fs.move(staging, target)  # fails if another writer took this version number
            return True
        except OSError:
            return False
        finally:
            if self._exists(staging):
                self.fs.delete_dir(staging)

    def promote(self, line: str, version: str) -> None:
        """Put ``version`` in service (atomic pointer update)."""
        self.read_card(line, version)  # refuses unknown versions
        pointer = {"version": version, "promoted_at": utc_now().isoformat()}
        self._write(f"{self._line_dir(line)}/{CURRENT_FILE}", json.dumps(pointer).encode())

    def derive_version(self, line: str, changes: dict[str, Any], note: str, promote: bool = True) -> ModelCard:
        """A new version of the current one with card fields replaced (threshold, say); tensors are copied."""
        parent = self.read_card(line)
        blob = self.read_tensor_bytes(parent)  # copied byte for byte, checksum-verified
        card = parent.model_copy(update={**changes, "parent": parent.version, "note": note, "created_at": utc_now()})
        return self.write_version(card, blob, promote=promote)
