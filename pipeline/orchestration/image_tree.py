"""The pipeline image's copy of the project, as a folder on this machine: the Dockerfile's
WORKDIR and COPY lines replayed over the checkout, with .dockerignore applied as Docker
applies it. Offline runs execute their tasks from this folder (and nothing of the checkout),
and a test imports every dotted path the compiled jobs name from it, so a module the image
lacks fails here, as it would in the first task on Vertex.

What it replays: `WORKDIR`, and `COPY [--chown=..] SRC... DEST` from the build context
(globs allowed); `COPY --from` (another stage) and `ADD` of URLs are refused, since no folder
can stand for them. `RUN` lines are not run: what they install comes from the same lock as
this machine's environment.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from settings.layout import IMAGE_PROJECT_DIR, PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
# Set in a process that must import the project from the image's folder only: the
# checkout's editable install is then taken off the import path (boundary/sitecustomize.py).
IMAGE_ONLY_ENV = "TAXI_IMAGE_ONLY"
BOUNDARY_DIR = Path(__file__).resolve().parent / "boundary"


class ImageTreeError(ValueError):
    """The Dockerfile asks for something a folder cannot stand for; the message says what."""


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str  # absolute, inside the image
    line: int


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.strip().partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
        pending = ""
    return out


def copies(dockerfile: Path = DOCKERFILE) -> tuple[str, list[Copy]]:
    """The image's final WORKDIR and every COPY, with its destination made absolute."""
    workdir, found = "/", []
    for number, keyword, rest in instructions(dockerfile.read_text()):
        if keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / rest)
        elif keyword in ("COPY", "ADD"):
            args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            flags = [a for a in args if a.startswith("--")]
            if any(f.startswith("--from") for f in flags):
                raise ImageTreeError(f"{dockerfile}:{number}: COPY --from another stage has "
                                     "no folder to stand for it")
            paths = [a for a in args if not a.startswith("--")]
            if len(paths) < 2 or any("://" in p for p in paths):
                raise ImageTreeError(f"{dockerfile}:{number}: {keyword} {rest!r} is not "
                                     "SRC... DEST from the build context")
            dest = paths[-1]
            absolute = str(PurePosixPath(workdir) / dest)
            found.append(Copy(tuple(paths[:-1]),
                              absolute + ("/" if dest.endswith("/") or dest == "." else ""),
                              number))
    return workdir, found


# ------------------------------------------------------------------ .dockerignore


def _segment_regex(segment: str) -> str:
    """One path segment of a Go filepath.Match pattern as a regex: `*` and `?` stop at `/`."""
    out, i = "", 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and "]" in segment[i + 1:]:
            end = segment.index("]", i + 1)
            body = segment[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        elif c == "\\" and i + 1 < len(segment):
            i += 1
            out += re.escape(segment[i])
        else:
            out += re.escape(c)
        i += 1
    return out


def pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern: `*` and `?` within a segment, `**` across any number of
    segments (zero included)."""
    parts = [p for p in PurePosixPath(pattern.strip("/")).parts if p not in ("", ".")]
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment_regex(part) + ("" if last else "/")
    return re.compile(f"^{regex}$")


def ignore_rules(context: Path) -> list[tuple[bool, re.Pattern]]:
    """(excludes, pattern) per line of the context's .dockerignore, in order."""
    path = context / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        rules.append((exclude, pattern_regex(line.lstrip("!").strip())))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """As Docker decides: the last rule that matches the path or one of its parent folders
    wins; `!` rules bring a path back."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for exclude, regex in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = exclude
    return verdict


# ------------------------------------------------------------------ the folder


def context_files(context: Path) -> list[str]:
    """Every file of the build context Docker would send, relative, '/'-separated."""
    rules = ignore_rules(context)
    found = []
    for root, dirs, files in os.walk(context):
        rel_root = Path(root).relative_to(context).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if not ignored(rel_root + d, rules)
                   or any(not exclude for exclude, _ in rules)]  # a `!` rule may reach inside
        found += [rel_root + f for f in files if not ignored(rel_root + f, rules)]
    return sorted(found)


def assemble(dest: Path, context: Path = PROJECT_ROOT,
             dockerfile: Path | None = None) -> Path:
    """Replays the COPY lines into `dest` (the image's `/`) and returns the image's WORKDIR
    inside it: the folder the tasks run in, and what PYTHONPATH names."""
    dockerfile = dockerfile or context / "Dockerfile"
    workdir, steps = copies(dockerfile)
    files = context_files(context)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for step in steps:
        for source in step.sources:
            pattern = PurePosixPath(source).as_posix().strip("/")
            pattern = "" if pattern == "." else pattern
            matched = [f for f in files if pattern == "" or f == pattern
                       or f.startswith(pattern + "/") or fnmatch.fnmatchcase(f, pattern)]
            if not matched:
                raise ImageTreeError(f"{dockerfile}:{step.line}: COPY {source}: no such file "
                                     "in the build context (or .dockerignore leaves it out)")
            for rel in matched:
                if rel == pattern and not step.dest.endswith("/") and len(step.sources) == 1:
                    target = step.dest  # a file copied to a file name
                elif rel == pattern or fnmatch.fnmatchcase(rel, pattern):
                    target = f"{step.dest.rstrip('/')}/{PurePosixPath(rel).name}"
                else:  # a folder's contents go into DEST
                    inner = rel[len(pattern) + 1:] if pattern else rel
                    target = f"{step.dest.rstrip('/')}/{inner}"
                out = dest / target.lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / rel, out)
    tree = dest / workdir.lstrip("/")
    tree.mkdir(parents=True, exist_ok=True)
    return tree


def image_env(tree: Path, dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The ENV the Dockerfile gives the image, its WORKDIR read as `tree`; and the switch
    that keeps the checkout off the import path of the processes that get it."""
    env = {}
    for _, keyword, rest in instructions(dockerfile.read_text()):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value.replace(IMAGE_PROJECT_DIR, str(tree))
    return {**env, IMAGE_ONLY_ENV: "1"}


def task_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A process environment that imports the project from `tree` alone, as the image's
    processes do: the image's ENV, with the boundary folder first on PYTHONPATH."""
    env = {**os.environ, **image_env(tree), **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(BOUNDARY_DIR), env.get("PYTHONPATH") or str(tree)])
    return env


IMPORT_CHECK = textwrap.dedent("""
    import importlib, json, sys
    failed = {}
    for dotted in json.loads(sys.argv[1]):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            try:
                target = importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name and (e.name == module or module.startswith(e.name + ".")):
                    continue  # a shorter prefix is the module, the rest attributes
                failed[dotted] = f"{type(e).__name__}: {e}"
                break
            except Exception as e:
                failed[dotted] = f"{type(e).__name__}: {e}"
                break
            try:
                for name in parts[cut:]:
                    target = getattr(target, name)
            except AttributeError as e:
                failed[dotted] = f"AttributeError: {e}"
            break
        else:
            failed[dotted] = "no module of this name"
    print(json.dumps(failed))
""")


def import_failures(tree: Path, dotted_paths: list[str], timeout: float = 300.0
                    ) -> dict[str, str]:
    """Each dotted path (module, or module and attributes) that does not import in a
    process that sees only `tree`, with the error it raised there."""
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, json.dumps(dotted_paths)],
                          cwd=tree, env=task_env(tree), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise ImageTreeError(f"the import check itself failed in {tree}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PROJECT_NAME = re.compile(r"\b([a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\b")


def dotted_paths(job_text: str, packages: tuple[str, ...]) -> list[str]:
    """Dotted names of this project's modules, classes and functions that a compiled job
    names (executor classes, run_fn, preprocessing_fn, artifact type titles, metric modules),
    found as `package.name...` in its text."""
    found = {m.group(1) for m in PROJECT_NAME.finditer(job_text)
             if m.group(1).split(".", 1)[0] in packages}
    return sorted(found)
