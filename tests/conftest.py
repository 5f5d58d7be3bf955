"""Shared fixtures: tiny params, a prepared tiny workspace, temporary repository copies, one Prefect server.

What every test would otherwise pay again is made once per session and copied: the workspace (the repository's
files, tiny params, a git commit), an empty MLflow store with its schema migrated (1 to 4 s each on 2 cores), and
finished pipeline runs (one_run, two_runs). Each test's one tier (unit, slow, faults, e2e) is set below.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Offline and quiet, before any of the tools is imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("GRAFT_PIPELINE_RUN_ID", None)


# Every test belongs to exactly one tier (pyproject.toml registers the markers; README, "Tests", says what each
# costs). By folder: tests/e2e and tests/tracking are e2e, tests/faults is faults. Elsewhere a test is unit unless
# it says otherwise: slow (it needs seconds: a real DVC repository, torchrun, a subprocess, a training run) or e2e
# (a stage's own test file may drive the whole pipeline).
TIERS = ("unit", "slow", "faults", "e2e")
FOLDER_TIERS = {"e2e": "e2e", "tracking": "e2e", "faults": "faults"}


def tier_of(item) -> str:
    """The one tier of a collected test; tier markers that contradict its folder, or each other, are an error."""
    parts = Path(item.path).resolve().relative_to(REPO / "tests").parts
    declared = {m.name for m in item.iter_markers() if m.name in TIERS}
    tier = FOLDER_TIERS.get(parts[0]) if len(parts) > 1 else None
    tier = tier or next((t for t in ("e2e", "slow") if t in declared), "unit")
    if declared - {tier}:
        raise pytest.UsageError(f"{item.nodeid} is marked {sorted(declared)}, but its tier is {tier!r} "
                                f"(tests/conftest.py, TIERS): one tier per test")
    return tier


# Under pytest-xdist (make test runs two workers, --dist loadgroup) a session fixture is made once per worker
# that uses it. The finished pipeline runs are the costly ones, so their users share one worker. Tests that
# share a module-scoped fixture (a workspace that one test leaves for the next) stay together on one worker.
FINISHED_RUNS = ("one_run", "two_runs")


def xdist_group(item) -> str | None:
    if any(name in item.fixturenames for name in FINISHED_RUNS):
        return "finished_runs"
    defs = item._fixtureinfo.name2fixturedefs
    if any(d.scope == "module" for name in item.fixturenames for d in defs.get(name, ())):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects by these markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(tier_of(item))
        group = xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def tiny_overrides() -> dict:
    """Sizes that make the whole pipeline run in seconds on a CPU."""
    return {
        "data": {"image_size": 16, "labels_per_class": 4},
        "model": {"backbone": "tiny_cnn", "backbone_args": {"width": 8}},
        "train": {"batch_size": 32, "threads": 1},
        "ingest": {"source": {"kind": "synthetic", "per_class": 24,
                              "classes": ["circle_solid", "square_checker", "cross_dots", "ring_stripes"]},
                   "target": {"kind": "synthetic", "per_class": 16,
                              "classes": ["circle_checker", "square_dots", "triangle_solid"]}},
        "prepare": {"target_val_per_class": 4, "target_test_per_class": 8},
        "pretrain": {"epochs": 2},
        "finetune": {"epochs": 2},
    }


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_params_dict() -> dict:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    return merge(shipped, tiny_overrides())


@pytest.fixture
def tiny_params():
    from graft.config import validate_params

    return validate_params(tiny_params_dict())


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


_SESSION_DIR: Path | None = None


def _session_dir() -> Path:
    """A folder for what this test session makes once and copies (removed when the session ends)."""
    global _SESSION_DIR
    if _SESSION_DIR is None:
        _SESSION_DIR = Path(tempfile.mkdtemp(prefix="graft-tests-"))
        atexit.register(shutil.rmtree, _SESSION_DIR, True)
    return _SESSION_DIR


def _workspace_template() -> Path:
    """This repository's files (no outputs, no tests) with tiny params, committed to a new git repository: made
    once per session."""
    template = _session_dir() / "workspace"
    if not template.exists():
        staging = _session_dir() / "workspace.tmp"
        for rel in _tracked_files():
            if rel.startswith(("tests/", "dvc.lock")):
                continue
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst)
        (staging / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
        _git(staging, "init", "-q")
        _git(staging, "add", "-A")
        _git(staging, "commit", "-qm", "workspace")
        staging.rename(template)
    return template


def _empty_store() -> Path:
    """An MLflow sqlite store as graft's first tracking call leaves it (schema migrated, no runs): made once per
    session. Migrating a new store is most of what its first MlflowClient call costs (1 to 4 s on 2 cores)."""
    store = _session_dir() / "mlflow.db"
    if not store.exists():
        from mlflow.tracking import MlflowClient

        staging = _session_dir() / "store.tmp"
        staging.mkdir()
        MlflowClient(f"sqlite:///{staging / 'mlflow.db'}").search_experiments()
        _copy_store(staging / "mlflow.db", store)
    return store


def _copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a sqlite file, whatever MLflow's engine still holds open (sqlite's backup API)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def add_empty_store(root: Path, name: str | None = None) -> Path:
    """Put the session's empty, migrated MLflow store in `root`: where graft's default store is (`mlflow.db`),
    or under another `name` (a server's backend store)."""
    from graft.tracking import DEFAULT_DB

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store(), root / (name or DEFAULT_DB))
    return root


def make_workspace(ws: Path, *, store: bool = True) -> Path:
    """A fresh copy of this repository (its git files, no outputs) with tiny params, committed to a new git repo
    (a copy of one made per session). With `store`, it also has an empty MLflow store with its schema migrated,
    as graft's first tracking call would leave it; without, it has no store (for tests that check none is made)."""
    shutil.copytree(_workspace_template(), ws, symlinks=True)
    if store:
        add_empty_store(ws)
    return ws


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def bare_workspace(tmp_path: Path) -> Path:
    """A workspace without a tracking store, as a fresh clone is: for tests that check that none is made."""
    return make_workspace(tmp_path / "ws", store=False)


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory) -> Path:
    """A folder where ingest and prepare already ran on tiny params, with an empty tracking store (shared by the
    stage tests)."""
    from graft.config import validate_params
    from graft.paths import Paths
    from graft.stages import ingest, prepare

    root = tmp_path_factory.mktemp("prepared")
    params = validate_params(tiny_params_dict())
    ingest.run(params, Paths.at(root))
    prepare.run(params, Paths.at(root))
    return add_empty_store(root)


@pytest.fixture
def stage_root(prepared_root: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared folder, so a test's outputs never leak into another's."""
    root = tmp_path / "root"
    shutil.copytree(prepared_root, root)
    return root


@pytest.fixture
def grafted(stage_root: Path, tiny_params):
    """Paths of a stage_root where pretrain and replace_head have run (a grafted model to fine-tune)."""
    from graft.paths import Paths
    from graft.stages import pretrain, replace_head

    paths = Paths.at(stage_root)
    pretrain.run(tiny_params, paths)
    replace_head.run(tiny_params, paths)
    return paths


def swap_validation_labels(paths) -> None:
    """Move each label of the prepared target's validation split to the next class. The better a model fits its
    training labels, the worse it then scores on validation, so the best epoch is an early one, never the last:
    what a test of keeping the best epoch needs (with the last epoch best, keeping the last would pass too)."""
    from graft.data.dataset import ImageDataset
    from graft.data.store import load_dataset, save_dataset

    split = paths.prepared("target") / "val"
    val = load_dataset(split)
    save_dataset(split, ImageDataset(val.images, (val.labels + 1) % len(val.classes), val.classes))


# One Prefect API server for the whole run: starting one costs ~10 s of CPU (most of it its database migrations),
# which each pytest-xdist worker used to pay for a server of its own. Under xdist the controller starts it as the
# run begins, with graft's own TemporaryServer (flows/server.py: spawned without waiting for it, so it starts while
# the workers start and collect), and names it to the workers in SHARED_SERVER_ENV; without workers, the first
# test that needs it starts it. Its database is the run's own, never the user's ~/.prefect.
SHARED_SERVER_ENV, SHARED_DATABASE_ENV = "GRAFT_TESTS_PREFECT_API_URL", "GRAFT_TESTS_PREFECT_DB"
_shared_server = None


def _start_shared_server():
    """Start the run's Prefect server and name it (and its database) in this process's environment."""
    from flows.server import TemporaryServer

    database = Path(tempfile.mkdtemp(prefix="graft-tests-prefect-")) / "prefect.db"
    atexit.register(shutil.rmtree, database.parent, True)
    with pytest.MonkeyPatch.context() as mp:  # the server's setting only: gone before any worker starts
        mp.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{database}")
        server = TemporaryServer()  # stopped when this process exits
    os.environ[SHARED_SERVER_ENV], os.environ[SHARED_DATABASE_ENV] = server.api_url, str(database)
    return server


def pytest_configure(config):
    global _shared_server
    is_xdist_controller = getattr(config, "workerinput", None) is None and getattr(config.option, "numprocesses", 0)
    if is_xdist_controller and not config.option.collectonly:
        _shared_server = _start_shared_server()


@pytest.fixture(scope="session", autouse=True)
def _prefect_logs_outside_capsys():
    """Configure Prefect's logging before any test's capsys is set up. It adds a console handler bound to
    sys.stderr as it is then (on Prefect's first use): under a test's capsys, a stream closed when that test ends,
    and every later Prefect log in this process (graft_in_process runs of other tests) would fail on it."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


@pytest.fixture(scope="session")
def prefect_server():
    """The run's one Prefect API server (above), answering, with Prefect pointed at it for this process."""
    import time

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from graft.health import why_unreachable

    if not os.environ.get(SHARED_SERVER_ENV):  # no xdist controller started it
        global _shared_server
        _shared_server = _start_shared_server()
    url = os.environ[SHARED_SERVER_ENV]
    # Still starting: import what the tests that need it will use, meanwhile, as `graft run` does while its own
    # server starts (flows/server.py, start_early).
    if why_unreachable(url, timeout=2) is not None:
        from graft import tracking

        tracking.preload()
        import torch  # noqa: F401
    deadline = time.monotonic() + 120  # a loaded 2-core machine can take a minute
    while (why := why_unreachable(url, timeout=2)) is not None:
        assert time.monotonic() < deadline, f"the tests' Prefect server at {url} did not answer: {why}"
        time.sleep(0.1)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@pytest.fixture
def migrated_prefect_home(prefect_server, tmp_path) -> Path:
    """A PREFECT_HOME whose database Prefect has already migrated (a copy of the run's server's, flow runs and
    all), as a user's is after their first run. A server on a new database spends ~5 of its ~9 s of start-up CPU
    migrating it; tests of a server graft starts itself take this copy (migrated: prefect_server answers)."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    _copy_store(Path(os.environ[SHARED_DATABASE_ENV]), home / "prefect.db")
    return home


def session_server_env() -> dict[str, str]:
    """The environment that points a `graft` subprocess at the session's Prefect server (prefect_server), so that
    it does not start a temporary server of its own (7 s on 2 cores): for tests that are not about that server."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


# ---------------------------------------------------------------- finished pipeline runs, made once and copied

# In the environment of the shared runs below: tests/faults/test_security.py checks that they reach no store.
SECRETS = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-Token-9f2c", "MLFLOW_TRACKING_TOKEN": "s3cr3t-Token-9f2c"}


def _graft_run_with_secrets(ws: Path, *args: str) -> None:
    from graft.cli import main as graft

    with pytest.MonkeyPatch.context() as mp:
        for key, value in SECRETS.items():
            mp.setenv(key, value)
        assert graft(["-C", str(ws), "run", *args]) == 0


@pytest.fixture(scope="session")
def one_run(tmp_path_factory, prefect_server) -> Path:
    """A workspace after one `graft run` on tiny params: the real Prefect flow, DVC and MLflow, in this process.
    tests/e2e/test_pipeline.py checks what it left. Read-only: a test that runs graft there, or changes files,
    takes a copy (copy_workspace)."""
    ws = make_workspace(tmp_path_factory.mktemp("one_run") / "ws")
    _graft_run_with_secrets(ws)
    return ws


@pytest.fixture(scope="session")
def two_runs(one_run, tmp_path_factory) -> Path:
    """A copy of one_run after a second `graft run -S finetune.lr=0.004` (test_registry compares, predicts from
    and reproduces them; test_dvc_tools reads the second with DVC's own commands; test_security searches both
    for SECRETS). Tests may add files to it but must not change its outputs, params or tracking store."""
    ws = copy_workspace(one_run, tmp_path_factory.mktemp("two_runs") / "ws")
    _graft_run_with_secrets(ws, "-S", "finetune.lr=0.004")
    return ws


@pytest.fixture
def finished_copy(one_run, tmp_path) -> Path:
    """A private copy of one_run, for a test that runs graft in it or changes it."""
    return copy_workspace(one_run, tmp_path / "ws")


_UNREWRITTEN = (".git/", ".dvc/cache/")  # content-addressed, with relative paths only


def _files_naming(root: Path, text: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and not rel.startswith(_UNREWRITTEN) and \
                text in path.read_bytes():
            found.append(path)
    return found


def copy_workspace(src: Path, dst: Path) -> Path:
    """A copy of a workspace where graft has run, which names only itself: MLflow's sqlite store records absolute
    paths (the experiment's artifact location, each run's artifact URI, model version sources), so they are
    rewritten from `src` to `dst`, here and in any other file that names `src`. Without that, the copy's runs
    would read and write the original's mlartifacts/. Checked: afterwards no file in the copy names `src`."""
    old, new = str(src.resolve()), str(dst.resolve())
    assert not new.startswith(old + os.sep), "a copy inside the original would still name it"
    shutil.copytree(src, dst, symlinks=True)
    db = dst / "mlflow.db"
    if db.exists():
        con = sqlite3.connect(db)
        with con:
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [c[1] for c in con.execute(f'PRAGMA table_info("{table}")')]:
                    con.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                                f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0', (old, new, old))
        con.execute("VACUUM")  # the old rows' bytes would stay in free pages
        con.close()
    for path in _files_naming(dst, old.encode()):
        if path != db:
            path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))
    left = _files_naming(dst, old.encode())
    assert not left, f"still naming {old}: {left}"
    return dst


def run_cli(ws: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`graft ARGS` in a subprocess, from the venv this test runs in."""
    cmd = [sys.executable, "-m", "graft.cli", "-C", str(ws), *args]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def graft_in_process(capsys, ws: Path, *args: str, check: bool = False) -> SimpleNamespace:
    """`graft ARGS` called in this process (graft.cli.main), with what it printed: what run_cli gives, without a
    new interpreter and its 3-4 s of imports (torch, MLflow), for tests of what a command does and says rather
    than of the process itself (its imports, signals, environment, exit). An exception graft lets escape fails
    the test, as a traceback on a subprocess's stderr would."""
    from graft.cli import main

    capsys.readouterr()
    try:
        code = main(["-C", str(ws), *args])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    out = capsys.readouterr()
    if check and code != 0:
        raise AssertionError(f"{' '.join(args)} failed ({code}):\n{out.out}\n{out.err}")
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def dvc(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(exe), *args], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc_repo(root: Path, dvc_yaml: str, files: dict[str, str]) -> Path:
    """A new git + DVC repository at `root` with this dvc.yaml and these files (tests of DVC behaviour)."""
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "dvc.yaml").write_text(dvc_yaml)
    for name, text in files.items():
        (root / name).write_text(text)
    return root
