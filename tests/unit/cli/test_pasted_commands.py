"""The commands a reader is told to paste into a shell (the README's ``bash`` blocks, the comments of the
generated manifest and of the Dockerfile) parse as the commands they show: a swallowed line break, which
once turned half of ``kubectl create secret`` into a comment, fails here."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from lineguard.cluster.render import DOCKERFILE, MANIFEST, render

ROOT = Path(__file__).resolve().parents[3]
PROGRAMS = ("kubectl", "docker", "lineguard", "serve", "helm", "curl", "make", "python", "pip")


def readme_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)


def comment_commands(text: str) -> list[str]:
    """The commands quoted in ``#``-comments: an indented line that starts with a known program, with the
    lines that continue it (after a trailing backslash) and those indented under it."""
    blocks: list[list[str]] = []
    open_block = False
    for line in text.splitlines():
        body = line[1:] if line.startswith("#") else None
        if body is None or not body.startswith("   "):
            open_block = False
            continue
        stripped = body.strip()
        if stripped.split(" ", 1)[0] in PROGRAMS:
            blocks.append([stripped])
            open_block = True
        elif open_block and body.startswith("     "):  # indented under the command: meant to continue it
            blocks[-1].append(stripped)
        else:
            open_block = False
    return ["\n".join(b) for b in blocks]


def comment_of(line: str) -> str:
    """What the shell takes as a comment: from the first ``#`` that begins a word outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[i + 1 :]
    return ""


def problems(snippet: str) -> list[str]:
    """What a shell would make of ``snippet`` that its reader did not mean."""
    found = []
    syntax = subprocess.run(["bash", "-n"], input=snippet, capture_output=True, text=True, timeout=10)
    if syntax.returncode != 0:
        found.append(f"bash -n: {syntax.stderr.strip()}")
    logical = re.sub(r"\\\n", " ", snippet)  # continuation lines joined, as the shell joins them
    for line in logical.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].startswith("-"):
            found.append(f"an option on a line of its own (the line before lost its backslash): {line.strip()!r}")
        if comment_of(line).lstrip().startswith("-"):  # what followed a lost backslash-newline
            found.append(f"a comment that starts with an option (a swallowed line break): {line.strip()!r}")
    return found


SNIPPETS = (
    [pytest.param(b, id=f"README-{i}") for i, b in enumerate(readme_blocks())]
    + [pytest.param(c, id=f"manifest-{i}") for i, c in enumerate(comment_commands(render()))]
    + [pytest.param(c, id=f"Dockerfile-{i}") for i, c in enumerate(comment_commands(DOCKERFILE.read_text()))]
)


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_a_pasted_command_is_the_command_shown(snippet: str) -> None:
    assert not problems(snippet), problems(snippet)


def test_the_secret_command_keeps_its_literal() -> None:
    (secret,) = [c for c in comment_commands(MANIFEST.read_text()) if "create secret generic lineguard-history" in c]
    words = shlex.split(secret.replace("\\\n", " "), comments=True)
    assert words[:3] == ["kubectl", "-n", "lineguard"] and any(w.startswith("--from-literal=url=") for w in words)


def test_the_check_catches_a_swallowed_line_break() -> None:
    broken = "kubectl -n lineguard create secret generic h #     --from-literal=url=postgresql://x"
    assert problems(broken)
    assert problems("docker build -f cluster/Dockerfile\n  --tag lineguard .")
    assert not problems("docker build -f cluster/Dockerfile \\\n  --tag lineguard .  # the image")
