"""Packages built from this tree for the tests: a copy of the tree (what git knows of) and
the debs made from it with ``make deb``, so no build product lands in the work tree.

The ``debs`` fixture (tests/conftest.py) builds them once a run for every file that
installs them (test_packaging.py; a container test can take the same files).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parent.parent


def copy_tree(dest: Path) -> Path:
    """The files git knows of (tracked and new, not ignored), as `make deb` packs them."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True)
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
    else:  # not a git checkout: everything but build products
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    for name in names:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def bump_changelog(tree: Path, version: str) -> None:
    changelog = tree / "packaging" / "debian" / "changelog"
    entry = (f"hsflowd ({version}) unstable; urgency=medium\n\n  * Rebuilt by the tests.\n\n"
             f" -- Tests <tests@localhost>  Thu, 26 Nov 2026 00:00:00 +0000\n\n")
    changelog.write_text(entry + changelog.read_text())


class BuildError(Exception):
    """A build step failed (its command, exit status and output's tail)."""


def _run(cmd, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def missing_build_deps(tree: Path, env: dict) -> str:
    """What dpkg-checkbuilddeps says is missing, or ""."""
    result = _run(["dpkg-checkbuilddeps", "packaging/debian/control"], tree, env)
    return "" if result.returncode == 0 else result.stderr.strip()


def build_debs(base: Path, version: str, env: dict) -> Dict[str, str]:
    """{version: path} of two debs built in a copy of the tree under ``base``: ``version``
    and a rebuild one above it (``version+test1``), for upgrades."""
    tree = copy_tree(base / "src")
    why = missing_build_deps(tree, env)
    if why:
        raise BuildError(f"deb build dependencies: {why}")
    out = {}
    for v in (version, version + "+test1"):
        if v != version:
            bump_changelog(tree, v)
        result = _run(["make", "deb"], tree, env)
        if result.returncode != 0:
            raise BuildError(f"make deb exited {result.returncode}\nstdout:\n"
                             f"{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
        built = tree / "dist" / f"hsflowd_{v}_all.deb"
        if not built.exists():
            raise BuildError(f"make deb made no {built.name}: {sorted(p.name for p in built.parent.iterdir())}")
        out[v] = shutil.copy(built, base / built.name)
    return out
