"""Dockerfiles and the Compose file read the way their engines read them (there is no
container engine here): Dockerfile instructions with their stages, Compose's variable
interpolation from an env file."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]

    def last(self, keyword: str) -> list[str] | None:
        """The exec form (JSON array) of the stage's last ENTRYPOINT/CMD, or None."""
        found = self.all(keyword)
        if not found:
            return None
        value = json.loads(found[-1])
        assert isinstance(value, list), f"{keyword} must use the exec form: {found[-1]}"
        return [str(v) for v in value]


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, args = line.partition(" ")
        word, args = word.upper(), " ".join(args.split())
        if word == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{path}: {word} before FROM"
            stages[-1].instructions.append((word, args))
    return stages


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


def copies(stage: Stage) -> list[Copy]:
    found = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        rest = [w for w in words if not w.startswith("--")]
        origin = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        found.append(Copy(rest[:-1], rest[-1], origin))
    return found


def dockerignore_excludes(root: Path, relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (its patterns are
    paths from the root, ``**`` any folders; no negations are used in ours)."""
    ignore = root / ".dockerignore"
    if not ignore.exists():
        return False
    for pattern in ignore.read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(regex + "(/.*)?", relative):
            return True
    return False


# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, $$.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a Compose env file (``NAME=value`` lines; comments ignored)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's interpolation of every string in a loaded Compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"], match["arg"] or ""
        have = variables.get(name)
        unset = have is None or (op is not None and op.startswith(":") and have == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return have or ""

    return _VARIABLE.sub(one, value)
