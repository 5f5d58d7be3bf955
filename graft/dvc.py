"""graft's view of the DVC pipeline: the stages in dvc.yaml, what is stale, restoring a stage from DVC's
run cache, and recording a stage in dvc.lock.

DVC decides what is stale; this module only asks it. Reading dvc.yaml needs no DVC import, so
the CLI can answer quickly; DVC itself is imported only to ask for status or to commit.
"""

from __future__ import annotations

from contextlib import chdir, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.config import select
from graft.errors import GraftError
from graft.files import hash_paths, read_yaml


@dataclass
class StageDecl:
    name: str
    deps: list[str]
    params: list[str]
    outs: list[str] = field(default_factory=list)


def _out_paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def load_dag(root: Path) -> dict[str, StageDecl]:
    """Stages of dvc.yaml in declaration order (which is the DAG order)."""
    spec = read_yaml(Path(root) / "dvc.yaml")
    stages = {}
    for name, s in spec["stages"].items():
        outs = _out_paths(s.get("outs")) + _out_paths(s.get("metrics")) + _out_paths(s.get("plots"))
        stages[name] = StageDecl(name, list(s.get("deps", [])), list(s.get("params", [])), outs)
    return stages


def downstream(dag: dict[str, StageDecl], stage: str) -> list[str]:
    """`stage` and every stage that depends on its outputs, directly or not, in DAG order."""
    affected = {stage}
    produced: set[str] = set(dag[stage].outs)
    for name, decl in dag.items():
        if name in affected:
            continue
        if any(_covers(out, dep) for dep in decl.deps for out in produced):
            affected.add(name)
            produced |= set(decl.outs)
    return [n for n in dag if n in affected]


def _covers(out: str, dep: str) -> bool:
    out, dep = out.rstrip("/"), dep.rstrip("/")
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


def stage_params(root: Path, decl: StageDecl) -> dict[str, Any]:
    """The values of the params a stage declares, read from params.yaml as DVC reads them."""
    raw = read_yaml(Path(root) / "params.yaml") or {}
    return {key: select(raw, key.split(".")) for key in decl.params}


def input_fingerprint(root: Path, decl: StageDecl) -> str:
    """A hash of everything a stage reads: its deps' contents and its params' values.

    Taken before and after a stage runs; if it changed meanwhile, the outputs may not match
    the inputs DVC would record, so the stage is not committed.
    """
    import hashlib
    import json

    h = hashlib.sha256(hash_paths([Path(root) / d for d in decl.deps]).encode())
    h.update(json.dumps(stage_params(root, decl), sort_keys=True, default=str).encode())
    return h.hexdigest()


class DvcError(GraftError):
    """DVC refused: an invalid dvc.yaml, a missing dependency, a locked repository…"""


def _import_dvc():
    """Import DVC in-process without letting it keep sys.stdout wrapped (its import runs
    colorama.init(), which would outlive the call and break output redirection)."""
    import sys

    if "dvc" not in sys.modules:
        import colorama

        import dvc.repo  # noqa: F401

        colorama.deinit()
    _read_lock_files_with_libyaml()


def _read_lock_files_with_libyaml() -> None:
    """Let DVC read dvc.lock, when it rewrites it, with ruamel's C parser instead of its pure-Python
    round-trip parser.

    DVC rewrites the whole lock file for every stage it records, reading it first with a round-trip parser
    that keeps comments and layout: right for dvc.yaml and params.yaml, which people edit, but a lock file
    is written only by DVC and holds neither. With graft's per-stage code dependencies the lock is ~45 kB,
    and that parse was a third of the CPU a commit costs. DVC's own writer still writes it, so the bytes
    are DVC's (tests/test_dvc.py compares them); every other file DVC modifies keeps DVC's reader.
    Idempotent; this process only (a `dvc` command keeps its own)."""
    import os

    import dvc.dvcfile
    from dvc.utils.serialize._common import _modify_data
    from dvc.utils.serialize._yaml import _dump, parse_yaml

    keep = dvc.dvcfile.modify_yaml
    if getattr(keep, "graft_libyaml", False):
        return

    @contextmanager
    def modify_yaml(path, fs=None):
        if os.path.basename(path) != "dvc.lock":
            with keep(path, fs=fs) as data:
                yield data
            return
        with _modify_data(path, parse_yaml, _dump, fs=fs) as data:  # parse_yaml: "safe", the C parser
            yield data

    modify_yaml.graft_libyaml = True
    dvc.dvcfile.modify_yaml = modify_yaml


@contextmanager
def _repo(root: Path):
    _import_dvc()
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # DVC resolves stage paths against the working directory, so talk to it from the repo root.
        with chdir(root), Repo(str(root)) as repo:
            yield repo
    except DvcException as e:
        raise DvcError(f"DVC: {e}") from e


def stale_stages(root: Path, targets: list[str] | None = None) -> dict[str, list[str]]:
    """{stage: [reasons]} for every stale stage (DVC's own `status`)."""
    with _repo(root) as repo:
        status = repo.status(targets=targets) if targets else repo.status()
    stale: dict[str, list[str]] = {}
    for key, entries in status.items():
        name = key.split(":")[-1]
        reasons = []
        for entry in entries:
            if isinstance(entry, str):
                reasons.append(entry)
            elif isinstance(entry, dict):
                for kind, changes in entry.items():
                    if isinstance(changes, dict):
                        reasons += [f"{kind}: {path} {what}" for path, what in changes.items()]
                    else:
                        reasons.append(f"{kind}: {changes}")
        stale[name] = reasons or ["changed"]
    return stale


def missing_params(root: Path, dag: dict[str, StageDecl]) -> list[str]:
    """Params that dvc.yaml declares but params.yaml lacks (DVC needs every one written out)."""
    raw = read_yaml(Path(root) / "params.yaml") or {}
    missing = []
    for decl in dag.values():
        for key in decl.params:
            if select(raw, key.split(".")) is None and key not in missing:
                missing.append(f"{key} (read by {decl.name})")
    return missing


def commit_stage(root: Path, stage: str) -> None:
    """Record the stage's current deps, params and outs in dvc.lock (and its outs in the DVC cache)."""
    import logging

    logging.getLogger("dvc").setLevel(logging.WARNING)  # its "Updating lock file" lines are noise here
    with _repo(root) as repo:
        repo.commit(stage, force=True)


def locked_hash(root: Path, stage: str, path: str) -> str | None:
    """The hash dvc.lock holds for one output of a stage (e.g. the raw data), or None."""
    lock_file = Path(root) / "dvc.lock"
    if not lock_file.exists():
        return None
    lock = read_yaml(lock_file) or {}
    for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
        if out.get("path") == path:
            return out.get("md5")
    return None


def cache_dir(root: Path) -> str:
    """This repository's DVC cache directory (`dvc cache dir`), absolute."""
    with _repo(root) as repo:
        return str(Path(repo.cache.local_cache_dir).resolve())


# Stages whose work does not end in their DVC outputs, and why. DVC's run cache brings back files only,
# so restoring one of these would leave a record of an effect that did not happen in this run.
EFFECTS_OUTSIDE_DVC: dict[str, str] = {
    "register": "its effect is a model version and aliases in the MLflow registry, which DVC cannot restore; "
                "metrics/register.json alone would name a version and a promotion that this run never made",
}


def may_restore(stage: str, forced: bool) -> bool:
    """Whether a stale stage may take its outputs from DVC's run cache instead of running: not when the
    user forced it (`--force` means run it), nor when its work does not end in its outputs."""
    return not forced and stage not in EFFECTS_OUTSIDE_DVC


def restore_from_run_cache(root: Path, stage: str) -> bool:
    """Check out a stale stage's outputs from DVC's run cache, as `dvc repro` does, if a run with the same
    deps, params and command was saved (by this workspace or any that shares its cache); the command is
    never run. False when there is no such run.

    As in `dvc repro`, the stage's outputs are removed first: they are replaced either way, and DVC's
    checkout refuses to overwrite a file it has no copy of (an output edited by hand). Nothing is
    recorded in dvc.lock: the caller commits (commit_stage) once it has seen the inputs hold still."""
    import logging

    from dvc.dependency.base import DependencyDoesNotExistError
    from dvc.repo import lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    logging.getLogger("dvc").setLevel(logging.WARNING)  # its "Stage is cached - skipping run" line is ours to say
    with _repo(root) as repo, lock_repo(repo):
        (target,) = repo.stage.collect(stage)
        target.remove_outs(ignore_remove=False, force=False)
        try:
            repo.stage_cache.restore(target)
        except (RunCacheNotFoundError, DependencyDoesNotExistError, FileNotFoundError):
            return False  # no such run, or a dependency is missing: the stage runs and says what it lacks
        # An output DVC could not check out is counted in its stats, not raised: look for the files.
        return all(out.exists for out in target.outs)


def default_remote(root: Path) -> str | None:
    """The name of the DVC remote that `dvc push` / `dvc pull` use by default, or None."""
    with _repo(root) as repo:
        return repo.config["core"].get("remote")
