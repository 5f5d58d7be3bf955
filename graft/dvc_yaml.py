"""dvc.yaml, generated from the stages' contracts (graft/contract.py) and their code (graft/code_deps.py).

Each stage module in graft/stages/ declares `CONTRACT`; this writes one dvc.yaml stage per module, in DAG
order, with `cmd: bin/graft stage <name>`, the stage's import closure inside graft/ as its code deps, then
the contract's deps, params, outs, metrics and plots. Adding a stage is adding its module: `graft dag
--write` does the rest. tests/test_dvc_yaml.py fails when the file on disk differs from what this makes.

    graft dag --check     # exit 1, with a diff, when dvc.yaml differs (also: python -m graft.dvc_yaml)
    graft dag --write     # rewrite it

Importing the stage modules imports torch (a few seconds); only this command and tests do it. `graft run`
reads the generated file, cheaply.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from graft.code_deps import REPO, stage_code
from graft.contract import Contract, dag_order

HEADER = """\
# Generated from the stages' contracts (CONTRACT in graft/stages/<name>.py) by `graft dag --write`;
# do not edit by hand: tests/test_dvc_yaml.py fails when this file differs from what they declare.
# `dvc repro` runs each stage as `graft stage <name>` (through bin/graft, which finds the project's .venv);
# `graft run` walks the same stages through Prefect and records them here too (dvc.lock), so both
# drivers agree. A stage's graft/ deps are its module's import closure (graft/code_deps.py).
"""


def contracts(root: Path = REPO) -> dict[str, Contract]:
    """Every stage module's contract, by stage name, in DAG order."""
    import importlib
    import pkgutil

    found = {}
    for module in pkgutil.iter_modules([str(Path(root) / "graft" / "stages")]):
        if module.name.startswith("_"):
            continue
        contract = getattr(importlib.import_module(f"graft.stages.{module.name}"), "CONTRACT", None)
        if not isinstance(contract, Contract):
            raise TypeError(f"graft/stages/{module.name}.py declares no CONTRACT (graft.contract.Contract)")
        found[module.name] = contract
    return {name: found[name] for name in dag_order(found)}


def _items(key: str, values: list[str]) -> list[str]:
    return [f"    {key}:", *(f"      - {v}" for v in values)] if values else []


def stage_text(name: str, contract: Contract, root: Path = REPO) -> list[str]:
    """One stage's lines of dvc.yaml."""
    def written(path: str) -> list[str]:
        return [f"      - {path}:", "          persist: true"] if path in contract.persist else [f"      - {path}"]

    lines = [f"  {name}:", f"    cmd: bin/graft stage {name}"]
    lines += _items("deps", [*stage_code(name, root), *contract.deps])
    lines += _items("params", list(contract.params))
    for key, paths in (("outs", contract.outs), ("metrics", contract.metrics)):
        if paths:
            lines += [f"    {key}:", *(line for p in paths for line in written(p))]
    if contract.plots:
        lines.append("    plots:")
        for plot in contract.plots:
            ((path, spec),) = plot.as_dvc().items()
            lines += [f"      - {path}:", *(f"          {k}: {v}" for k, v in spec.items())]
    return lines


def render(root: Path = REPO) -> str:
    """dvc.yaml as the contracts declare it."""
    blocks = ["\n".join(stage_text(name, contract, root)) for name, contract in contracts(root).items()]
    return HEADER + "stages:\n" + "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="graft dag", description="dvc.yaml, generated from the stages' contracts.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1, showing a diff, when dvc.yaml differs (default)")
    action.add_argument("--write", action="store_true", help="rewrite dvc.yaml from the contracts")
    parser.add_argument("--root", type=Path, default=REPO, help=f"the repository (default {REPO})")
    args = parser.parse_args(argv)

    path = args.root / "dvc.yaml"
    current = path.read_text() if path.exists() else ""
    wanted = render(args.root)
    if current == wanted:
        print(f"{path}: as the stages' contracts declare it")
        return 0
    if args.write:
        from graft.files import atomic_write_bytes

        atomic_write_bytes(path, wanted.encode())
        print(f"{path}: rewritten from the stages' contracts")
        return 0
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                                               f"{path} (as it is)", f"{path} (from the contracts)"))
    print(f"{path}: differs from the stages' contracts; run `graft dag --write` to regenerate it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
