"""Labelled test folders the server may read, for the web page's simulator.

A sample folder is any folder in the MVTec layout with a ``test/`` sub-folder of labelled images
(``test/good`` = good, every other ``test/<type>`` = defective), found at most ``MAX_DEPTH`` levels
under one of the configured roots (``web.sample_roots`` in ``serve_config.yaml``). Folders are named by
``<root name>/<path under the root>``; every path asked for is resolved and must stay inside its
root (no ``..``, no symbolic link out), and only image files are served.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lineguard.models.preprocess import IMAGE_SUFFIXES
from lineguard.training.data import list_images

MAX_DEPTH = 3  # <root>/<dataset>/<category>/test
MAX_FOLDERS = 500


class SampleError(LookupError):
    """A folder or image that is not there or not allowed; the message names it and what is."""


class NoSampleRootsError(SampleError):
    """The service was given no sample roots."""


@dataclass(frozen=True)
class SampleImage:
    path: str  # under the folder, e.g. "test/crack/000.png"
    label: str  # "ok" (test/good) or "ng"
    defect_type: str  # "good" or the test sub-folder name


@dataclass(frozen=True)
class SampleFolder:
    id: str  # "<root name>/<path under the root>"
    good: int
    defective: int
    types: dict[str, int]


def _inside(base: Path, rel: str) -> Path | None:
    """``base / rel`` resolved (links followed), or None when it leaves ``base`` or cannot be a path."""
    try:
        path = (base / rel).resolve()
    except (ValueError, OSError):  # a NUL byte, a loop of links
        return None
    return path if path.is_relative_to(base) else None


def _not_a_sample_folder(folder_id: str) -> SampleError:
    return SampleError(f"{folder_id!r} is not a sample folder with test images: GET /v1/samples lists them")


class SampleRoots:
    def __init__(self, roots: list[str]) -> None:
        self.roots: dict[str, Path] = {}
        for root in roots:
            path = Path(root).expanduser().resolve()
            name = path.name or "root"
            while name in self.roots:
                name += "_"
            self.roots[name] = path

    def _test_types(self, folder: Path) -> dict[str, list[Path]]:
        test = folder / "test"
        if not test.is_dir():
            return {}
        found = {sub.name: list_images(sub) for sub in sorted(test.iterdir()) if sub.is_dir()}
        return {name: images for name, images in found.items() if images}

    def folders(self) -> list[SampleFolder]:
        """Every sample folder under the roots, by id."""
        out: list[SampleFolder] = []
        for name, root in self.roots.items():
            if not root.is_dir():
                continue
            for current, subdirs, _ in os.walk(root):
                here = Path(current)
                depth = len(here.relative_to(root).parts)
                subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "test")
                if depth >= MAX_DEPTH:
                    subdirs[:] = []
                types = self._test_types(here)
                if types:
                    counts = {t: len(images) for t, images in types.items()}
                    good = counts.get("good", 0)
                    rel = here.relative_to(root).as_posix()
                    folder_id = name if rel == "." else f"{name}/{rel}"
                    out.append(SampleFolder(folder_id, good, sum(counts.values()) - good, counts))
                    if len(out) >= MAX_FOLDERS:
                        return out
        return out

    def _folder(self, folder_id: str) -> Path:
        name, _, rel = folder_id.partition("/")
        root = self.roots.get(name)
        if root is None:
            if not self.roots:
                raise NoSampleRootsError("no sample folders are configured: set web.sample_roots in serve_config.yaml")
            known = sorted(self.roots)
            raise SampleError(f"no sample root named {name!r} (roots: {known}): GET /v1/samples lists them")
        folder = _inside(root, rel)
        if folder is None or not (folder / "test").is_dir():  # a cheap check: image() runs per image
            raise _not_a_sample_folder(folder_id)
        return folder

    def images(self, folder_id: str) -> list[SampleImage]:
        """The folder's labelled test images, sorted by path (the page shuffles them)."""
        folder = self._folder(folder_id)
        types = self._test_types(folder)
        if not types:
            raise _not_a_sample_folder(folder_id)
        return [
            SampleImage(path.relative_to(folder).as_posix(), "ok" if kind == "good" else "ng", kind)
            for kind, paths in types.items()
            for path in paths
        ]

    def image(self, folder_id: str, path: str) -> Path:
        """The file of one test image; refuses anything outside the folder's ``test/`` or not an image."""
        folder = self._folder(folder_id)
        file = _inside((folder / "test").resolve(), path.removeprefix("test/"))
        if file is None or file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
            raise SampleError(f"{path!r} is not a test image of {folder_id!r}: GET /v1/samples/images lists them")
        return file
