"""What ``cluster/Dockerfile`` puts in the image, without Docker: its ``COPY`` lines and ``.dockerignore``
read the way ``docker build`` reads them, and the file set assembled in a folder; and its ``CMD``."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "cluster" / "Dockerfile"


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined and comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def copies(dockerfile: Path = DOCKERFILE) -> list[Copy]:
    """The ``COPY`` instructions (a stage other than the build context, ``--from``, is refused)."""
    found = []
    for word, rest in instructions(dockerfile):
        if word != "COPY":
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            raise ValueError(f"COPY {rest}: copies from another stage, which this reading does not follow")
        paths = [a for a in args if not a.startswith("--")]
        found.append(Copy(tuple(paths[:-1]), paths[-1]))
    return found


def command(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The image's ``CMD``, in its exec (JSON) form."""
    found = [rest for word, rest in instructions(dockerfile) if word == "CMD"]
    if not found:
        raise ValueError(f"{dockerfile} has no CMD")
    argv: list[str] = json.loads(found[-1])
    return argv


def _pattern(text: str) -> re.Pattern[str]:
    """One ``.dockerignore`` pattern (Go's filepath.Match plus ``**``); a match on a folder covers its files."""
    text = text.strip("/")
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[":
            end = text.index("]", i)
            out, i = out + text[i : end + 1], end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + "(?:/.*)?")


def ignore_rules(context: Path = ROOT) -> list[tuple[bool, re.Pattern[str]]]:
    """``(excludes, pattern)`` per line of ``.dockerignore``; the last rule that matches a path decides."""
    file = context / ".dockerignore"
    rules = []
    for raw in file.read_text().splitlines() if file.is_file() else []:
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), _pattern(line.lstrip("!"))))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    verdict = False
    for excludes, pattern in rules:
        if pattern.fullmatch(relative):
            verdict = excludes
    return verdict


def context_files(context: Path = ROOT) -> list[str]:
    """Every file of the build context that ``docker build`` sends (``.dockerignore`` applied)."""
    rules = ignore_rules(context)
    prune = all(excludes for excludes, _ in rules)  # no "!" rule can bring back a file of an ignored folder
    found = []
    for folder, subfolders, names in os.walk(context):
        here = Path(folder).relative_to(context)
        if prune:
            subfolders[:] = [d for d in subfolders if not ignored((here / d).as_posix(), rules)]
        found += [rel for name in names if not ignored(rel := (here / name).as_posix(), rules)]
    return sorted(found)


def assemble(target: Path, context: Path = ROOT, dockerfile: Path = DOCKERFILE) -> dict[str, Path]:
    """Copy what each ``COPY`` takes from the build context into ``target``; returns each destination's
    folder there (``/tmp/lineguard-src`` -> ``target/tmp/lineguard-src``)."""
    files = context_files(context)
    folders: dict[str, Path] = {}
    for copy in copies(dockerfile):
        into = target / copy.destination.lstrip("/")
        folders[copy.destination] = into
        for source in copy.sources:
            prefix = source.strip("/").removeprefix(".").strip("/")
            chosen = [f for f in files if not prefix or f == prefix or f.startswith(prefix + "/")]
            if not chosen:
                raise ValueError(f"COPY {source}: nothing in the build context (or all of it in .dockerignore)")
            for rel in chosen:
                if not prefix:  # the whole context
                    inside = rel
                elif rel == prefix:  # one file keeps its name
                    inside = Path(rel).name
                else:  # a folder's contents land in the destination
                    inside = rel[len(prefix) + 1 :]
                (into / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / rel, into / inside)
    return folders
