"""Each Snakemake rule's code inputs, read off what its step script imports.

A step's result depends on the package code it runs, not only on its script: editing a module the
step uses (or a template it renders) must rerun the step, and editing an unrelated module must
not. Hand-written lists of modules per rule go stale as soon as the code moves, so the Snakefile
asks this module instead: it parses the script, follows its imports of the package transitively
and returns the package files (plus the templates they name) as extra rule inputs.

Pure standard library and no import of the package itself, so that it works before the package
can be imported and costs little at Snakefile start-up; parsed files are cached.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

TEMPLATES = "templates"


class _Import(NamedTuple):
    """One imported module: `import module` (names empty) or `from module import names`."""

    module: str | None  # dotted; None for `from . import x`
    names: tuple[str, ...]
    level: int  # 0 for absolute imports, the number of leading dots otherwise


class _Parsed(NamedTuple):
    """What matters in one file: its imports and its string literals."""

    imports: tuple[_Import, ...]
    strings: frozenset[str]


# path -> ((mtime_ns, size), parsed): a file is parsed again only when it changes.
_CACHE: dict[Path, tuple[tuple[int, int], _Parsed]] = {}


def _parse(path: Path) -> _Parsed:
    """The imports and string literals anywhere in one Python file (cached)."""
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        # A broken file fails its own step; it must not stop the whole workflow from starting.
        parsed = _Parsed((), frozenset())
    else:
        imports: list[_Import] = []
        strings: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.extend(_Import(alias.name, (), 0) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names)
                imports.append(_Import(node.module, names, node.level))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
        parsed = _Parsed(tuple(imports), frozenset(strings))
    _CACHE[path] = (key, parsed)
    return parsed


def _locate(package_dir: Path, parts: tuple[str, ...]) -> list[Path]:
    """The files that importing the module `parts` (relative to the package) runs.

    Every package on the way contributes its `__init__.py` (when it has one), and the module
    itself its `.py` file; a part that is no module (a name inside the module before it) stops
    the walk, so `vitct.a.name` gives the files of `vitct.a`.
    """
    files = [package_dir / "__init__.py"] if (package_dir / "__init__.py").is_file() else []
    current = package_dir
    for part in parts:
        sub = current / part
        if (sub / "__init__.py").is_file():
            files.append(sub / "__init__.py")
        elif (current / f"{part}.py").is_file():
            files.append(current / f"{part}.py")
            break  # a plain module has no sub-modules
        elif not sub.is_dir():  # not a namespace package either: a name, not a module
            break
        current = sub
    return files


def _imported_files(
    imp: _Import, package_dir: Path, name: str, package: tuple[str, ...] | None
) -> list[Path]:
    """The package files one import statement pulls in.

    `name` is the package's name; `package` is the importing file's package relative to the
    package root (for relative imports), None when the file lies outside the package.
    """
    if imp.level:
        if package is None or imp.level - 1 > len(package):
            return []  # outside the package, or above its top
        base = package[: len(package) - (imp.level - 1)]
        module = base + (tuple(imp.module.split(".")) if imp.module else ())
    else:
        top, *rest = imp.module.split(".")
        if top != name:
            return []  # another top-level package
        module = tuple(rest)
    if not imp.names or imp.names == ("*",):
        return _locate(package_dir, module)
    # `from m import n`: n is a sub-module or a name inside m; _locate tells which.
    return [path for item in imp.names for path in _locate(package_dir, (*module, item))]


def _templates(package_dir: Path) -> list[tuple[Path, str]]:
    """Every file under a `templates/` folder of the package, with its path inside that folder."""
    found = []
    for folder in sorted(package_dir.rglob(TEMPLATES)):
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found.append((path, path.relative_to(folder).as_posix()))
    return found


def code_files(script: str | Path, package_dir: str | Path) -> list[str]:
    """The sorted package files that `script` imports, directly or through package modules.

    `package_dir` is the package's folder (e.g. `src/vitct`), whose name is the package's name.
    Imports anywhere in a file count (inside functions and `if TYPE_CHECKING:` too), with the
    `__init__.py` of every package on the way, and any file of a `templates/` folder whose name
    (or path inside the folder) is a string literal in an included module. The script itself is
    left out: Snakemake tracks it already. Paths are built on `package_dir` as given.
    """
    script = Path(script)
    package_dir = Path(package_dir)
    if not script.is_file():
        raise ValueError(f"step script {script} does not exist: cannot read its code inputs")
    if not package_dir.is_dir():
        raise ValueError(f"package folder {package_dir} (for step script {script}) does not exist")

    root = package_dir.resolve()
    try:
        script_package = script.resolve().relative_to(root).parent.parts
    except ValueError:
        script_package = None  # the usual case: the script lies outside the package

    modules: set[Path] = set()
    queue: list[tuple[Path, tuple[str, ...] | None]] = [(script, script_package)]
    while queue:
        path, package = queue.pop()
        for imp in _parse(path).imports:
            for found in _imported_files(imp, package_dir, root.name, package):
                if found not in modules:
                    modules.add(found)
                    queue.append((found, found.relative_to(package_dir).parent.parts))
    if script_package is not None:  # a script inside the package may import itself in a cycle
        modules.discard(package_dir / script.resolve().relative_to(root))

    files = set(modules)
    templates = _templates(package_dir)
    if templates:
        for module in modules:
            strings = _parse(module).strings
            files.update(
                path for path, inner in templates if path.name in strings or inner in strings
            )
    return sorted(str(path) for path in files)
