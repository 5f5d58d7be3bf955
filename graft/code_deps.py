"""Each stage's code: the files of the graft package that its module imports, directly or not.

`dvc.yaml` lists these files as a stage's code dependencies, and a training stage's checkpoint key
hashes them, so a change to any code a stage runs makes it stale, and a change to code it never
runs does not. The closure is found by parsing the sources (`ast`), never by importing them:
every `import` and `from ... import` counts, at module level or inside a function, absolute or
relative, as long as it resolves to a file of the `graft/` package. The `__init__.py` of every
package on the way counts too, since Python runs it on import. Imports by computed name
(`importlib.import_module(name)`) cannot be seen and are not followed.

graft/dvc_yaml.py writes them into dvc.yaml (`graft dag --write`), after each stage's contract.

Plain Python on purpose (no Prefect, MLflow or torch): tests and `graft` itself use it cheaply.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "graft"
# The repository this module belongs to (graft/ sits at its root).
REPO = Path(__file__).resolve().parents[1]
REGENERATE = "graft dag --write"


def _module_file(root: Path, parts: list[str]) -> Path | None:
    """The file Python runs for the module `parts` under root: a package's __init__.py first, then <name>.py."""
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _files_for(root: Path, dotted: str) -> list[Path]:
    """The project files importing `dotted` runs: each package's __init__.py on the way, then the module.

    Nothing for modules outside the package; a trailing name that is no module (an attribute, as in
    `from graft.files import write_json`) adds nothing."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return []
    files = []
    for i in range(1, len(parts) + 1):
        found = _module_file(root, parts[:i])
        if found is not None:
            files.append(found)
            if found.name != "__init__.py":  # a plain module has no submodules
                break
        elif not root.joinpath(*parts[:i]).is_dir():  # a folder without __init__.py is a namespace package
            break
    return files


def _module_name(root: Path, file: Path) -> tuple[str, str]:
    """(the module's dotted name, the package relative imports start from)."""
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imported_names(source: str, package: str, filename: str = "<source>") -> list[str]:
    """Every module name the source imports (anywhere in it), absolute, with `from X import y` as X and X.y."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                if node.level - 1 >= len(anchor):
                    continue  # beyond the top-level package: Python refuses it too
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def closure(modules: Iterable[str], root: Path = REPO) -> list[str]:
    """The repository-relative paths (sorted, POSIX) of the project files that importing `modules` runs."""
    root = Path(root)
    seen: set[Path] = set()
    todo: list[Path] = []
    for module in modules:
        found = _files_for(root, module)
        if not found or found[-1] != _module_file(root, module.split(".")):
            raise FileNotFoundError(f"{module}: no such module under {root}")
        todo.extend(found)
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        _, package = _module_name(root, file)
        for name in imported_names(file.read_text(encoding="utf-8"), package, str(file)):
            todo.extend(f for f in _files_for(root, name) if f not in seen)
    return sorted(f.relative_to(root).as_posix() for f in seen)


def stage_code(stage: str, root: Path = REPO) -> list[str]:
    """The code of stage `stage`: the import closure of graft/stages/<stage>.py."""
    return closure([f"{PACKAGE}.stages.{stage}"], root)


def is_code_dep(dep: object) -> bool:
    """A dvc.yaml dependency on graft's code (as opposed to data, models, ...)."""
    return isinstance(dep, str) and (dep.rstrip("/") == PACKAGE or dep.startswith(f"{PACKAGE}/"))


def mismatches(root: Path = REPO) -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (code deps dvc.yaml lists but the stage does not import, files it imports that dvc.yaml misses)."""
    from graft.files import read_yaml

    spec = read_yaml(Path(root) / "dvc.yaml")
    out = {}
    for name, stage in spec["stages"].items():
        listed = [d for d in stage.get("deps") or [] if is_code_dep(d)]
        wanted = stage_code(name, root)
        if listed != wanted:
            out[name] = (sorted(set(listed) - set(wanted)), sorted(set(wanted) - set(listed)))
    return out
