"""A Dockerfile and its build context, read as ``docker build`` reads them, for the forms
this project's Dockerfiles use. Any other form raises :class:`DockerfileError` instead of
being read differently from Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# The python images' environment, before a Dockerfile's own ENV.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class DockerfileError(ValueError):
    """The Dockerfile or .dockerignore uses a form that this reader does not handle."""


@dataclass
class Step:
    kind: str  # RUN, COPY or WORKDIR
    args: list[str]
    env: dict[str, str]  # in effect at this step
    workdir: str


@dataclass
class Stage:
    name: str | None
    base: str
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))
    steps: list[Step] = field(default_factory=list)
    workdir: str = "/"
    user: str = "0"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def context_sources(self) -> list[str]:
        """The build-context paths that this stage's COPY steps read."""
        return [source for step in self.steps if step.kind == "COPY" and not step.args[0].startswith("--from=")
                for source in step.args[:-1]]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) for each instruction, continuation lines joined, comments left out."""
    found, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def expand(value: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` as Docker substitutes them: an unset variable is empty.
    Other forms (``${NAME:-default}``, ``\\$``) are refused."""
    if "\\" in value or re.search(r"\$\{(?!\w+\})", value):
        raise DockerfileError(f"a substitution form not handled here: {value}")
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _env(stage: Stage, rest: str) -> None:
    if "'" in rest or "\\" in rest:  # quoting that stops substitution, which shlex would hide
        raise DockerfileError(f"ENV with single quotes or escapes: {rest}")
    before = dict(stage.env)  # every value of one ENV sees the variables as they were before it
    for pair in shlex.split(rest):
        if "=" not in pair:
            raise DockerfileError(f"ENV in the legacy form `ENV name value`: {rest}")
        key, _, value = pair.partition("=")
        stage.env[key] = expand(value, before)


def _copy(stage: Stage, rest: str) -> None:
    args = rest.split()
    if "$" in rest or rest.startswith("["):
        raise DockerfileError(f"COPY with variables or in JSON form: {rest}")
    flags = [a for a in args if a.startswith("--")]
    if [f for f in flags if not f.startswith("--from=")] or len(args) - len(flags) < 2:
        raise DockerfileError(f"COPY form not handled here: {rest}")
    given = args[-1]
    # relative to the WORKDIR in effect; "dir/" and "." name a directory to copy into
    destination = posixpath.normpath(posixpath.join(stage.workdir, given))
    if given.endswith(("/", "/.")) or given == ".":
        destination = destination.rstrip("/") + "/"
    stage.steps.append(Step("COPY", [*args[:-1], destination], dict(stage.env), stage.workdir))


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
            continue
        if not stages:
            raise DockerfileError(f"{keyword} before FROM")
        stage = stages[-1]
        if keyword == "ENV":
            _env(stage, rest)
        elif keyword == "RUN":
            stage.steps.append(Step("RUN", [rest], dict(stage.env), stage.workdir))
        elif keyword == "COPY":
            _copy(stage, rest)
        elif keyword == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, expand(rest, stage.env))
            stage.steps.append(Step("WORKDIR", [stage.workdir], dict(stage.env), stage.workdir))
        elif keyword == "USER":
            stage.user = expand(rest, stage.env)
        elif keyword in ("CMD", "ENTRYPOINT"):
            if not rest.startswith("["):
                raise DockerfileError(f"{keyword} in shell form: {rest}")
            setattr(stage, keyword.lower(), json.loads(rest))
        elif keyword != "EXPOSE":
            raise DockerfileError(f"unsupported instruction {keyword} {rest}")
    return stages


def _segment(pattern: str) -> str:
    """One path segment of a .dockerignore pattern as a regex: * and ? stop at /."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1:end] + "]")  # Go's classes: ^ negates, ! is itself
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def ignore_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore line as Docker matches it: against the path from the context root,
    or any directory above it; ``**`` is any number of directories."""
    if pattern.startswith("!"):
        raise DockerfileError(f".dockerignore exceptions are not handled here: {pattern}")
    parts = posixpath.normpath(pattern.lstrip("/")).split("/")
    regex = ""
    for index, part in enumerate(parts):
        if part == "**":
            regex += "(?:[^/]+/)*" if index < len(parts) - 1 else ".*"
        else:
            regex += _segment(part) + ("/" if index < len(parts) - 1 else "")
    return re.compile(regex)


@dataclass
class Context:
    """The build context: a directory and the patterns of its .dockerignore."""

    root: Path
    patterns: list[re.Pattern]

    @classmethod
    def of(cls, root: Path) -> "Context":
        ignore = root / ".dockerignore"
        lines = ignore.read_text().splitlines() if ignore.exists() else []
        return cls(root, [ignore_pattern(line.strip()) for line in lines
                          if line.strip() and not line.lstrip().startswith("#")])

    def ignored(self, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        return any(p.fullmatch(prefix) for p in self.patterns for prefix in prefixes)

    def entries(self, source: str) -> list[Path]:
        """``source`` and what lies under it (files, directories, symlinks), as COPY sees them."""
        top = self.root / source
        if self.ignored(posixpath.normpath(source)) or not (top.exists() or top.is_symlink()):
            raise DockerfileError(f"COPY {source}: not in the build context")
        if top.is_symlink():
            raise DockerfileError(f"COPY {source}: a symlink, which Docker follows and this reader does not")
        found = [top]
        if top.is_dir():
            for directory, dirs, files in os.walk(top):
                for name in sorted(dirs + files):
                    path = Path(directory) / name
                    if self.ignored(path.relative_to(self.root).as_posix()):
                        if name in dirs:
                            dirs.remove(name)
                        continue
                    found.append(path)
        return sorted(found)

    def digest(self, sources: list[str], into: "hashlib._Hash") -> None:
        """Add to ``into`` everything COPY would take from ``sources``: paths, modes, contents."""
        for source in sources:
            for path in self.entries(source):
                mode = path.lstat().st_mode
                into.update(f"{path.relative_to(self.root).as_posix()}\0{mode:o}\0".encode())
                if path.is_symlink():
                    into.update(os.readlink(path).encode())
                elif path.is_file():
                    into.update(path.read_bytes())
                into.update(b"\0")

    def copy(self, source: str, target: Path, into_directory: bool) -> None:
        """COPY ``source`` to ``target``: a directory's contents into it, a file to it (or
        into it, when the destination ends with / or names a directory)."""
        top = self.root / source
        entries = self.entries(source)
        if top.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for path in entries[1:]:
                out = target / path.relative_to(top)
                if path.is_symlink():
                    out.symlink_to(os.readlink(path))
                elif path.is_dir():
                    out.mkdir(exist_ok=True)
                else:
                    shutil.copy2(path, out)
            return
        if into_directory or target.is_dir():
            target = target / top.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(top, target)
