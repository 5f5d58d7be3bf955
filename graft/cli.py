"""`graft`: the command line. Imports stay lazy so that `--help` and an up-to-date `graft run` are fast:
torch, Prefect and MLflow are imported only when there is work for them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STAGE_HELP = "ingest, prepare, pretrain, replace_head, finetune, baseline, evaluate, register"

EPILOG = """\
examples:
  graft run                         run whatever is stale, then print the summary
  graft run -S finetune.lr=0.001    change a parameter (written into params.yaml, like dvc exp run -S)
  graft run --dry-run               list what would run, and why
  graft run --force finetune        rerun finetune and everything downstream of it
  graft stage evaluate              run one stage (this is what dvc repro calls)
  graft status                      what is stale, the registered champion and the data hash
  graft compare --last 3            the last runs side by side, plus a PNG
  graft sweep -S finetune.lr=0.001,0.0003 -S finetune.strategy=full,gradual_unfreeze
                                    run the 2x2 grid, two variants at a time, and compare them
  graft lineage                     commit, data, params and runs behind the champion
  graft reproduce models:/graft-classifier/2   rerun a model's pipeline and check the metrics match
  graft predict photo.png           classify images with the champion
  graft promote 3 --reason "classes changed"   make version 3 the champion by hand (bypasses the gate)
  graft data add new_images/        merge labelled images (class folders) into the image-folder source
  graft retrain                     retrain now if the data changed since the champion was trained
  graft serve --cron "0 3 * * *"    retrain on a schedule (needs a Prefect server: make server)
  graft ui                          open the MLflow UI on http://127.0.0.1:5000
  graft dag --check                 does dvc.yaml match the stages' declarations? (--write regenerates it)

graft keeps DVC (what is stale), Prefect (how stages run) and MLflow (what happened) in step:
after `graft run`, `dvc status` is clean, and after `dvc repro`, `graft run` has nothing to do.
"""


def _quiet_environment() -> None:
    # Offline by default: no analytics or telemetry calls from the tools graft drives.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graft", description="Transfer learning for image classifiers, with every artifact tracked.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-C", "--root", default=".", help="the graft repository to work in (default: current folder)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="on an error, show the traceback too (and Prefect's own reports of a failed stage)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_stage, _add_status, _add_lineage, _add_reproduce, _add_log, _add_compare, _add_predict,
                _add_promote, _add_lr_find, _add_data, _add_retrain, _add_serve, _add_sweep, _add_ui, _add_dag):
        add(sub)
    return parser


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run the pipeline: every stale stage, in order, through Prefect",
                         description="Run every stale stage in DAG order (DVC decides what is stale) as Prefect tasks, "
                                     "record each in dvc.lock, log everything to MLflow, and print a summary.")
    run.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, e.g. -S finetune.lr=0.001 (written into params.yaml), or remove "
                          "one: -S ~model.backbone_args.width; repeatable. Changing a source's kind drops the "
                          "old kind's keys")
    run.add_argument("--dry-run", action="store_true", help="list the stages that would run, and why; run nothing")
    run.add_argument("--force", metavar="STAGE", help=f"rerun STAGE and everything downstream ({STAGE_HELP})")
    run.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                     help="as graft -v: a failed stage's traceback, and Prefect's own reports of it")


def _add_stage(sub) -> None:
    stage = sub.add_parser("stage", help="run a stage (or several) in this process (dvc repro calls this)",
                           description="Run a stage now, whatever its status, and log it to MLflow. Several "
                                       "names run in that order in this one process (as `graft reproduce` "
                                       "does), each with its own stage run. It never writes dvc.lock: under "
                                       "`dvc repro`, DVC records the stage afterwards; `graft run` records what "
                                       "it runs.")
    stage.add_argument("name", metavar="NAME", nargs="+", help=STAGE_HELP)


def _add_status(sub) -> None:
    sub.add_parser("status", help="stale stages, the champion (version, accuracy, age) and the data hash")


def _add_lineage(sub) -> None:
    lineage = sub.add_parser("lineage", help="the commit, data, params and runs behind a registered model",
                             description="Walk back from a registered model version to the exact commit, "
                                         "data hash, params and MLflow runs that produced it.")
    lineage.add_argument("model", nargs="?", default=None, metavar="MODEL_URI",
                         help="models:/<name>@<alias> or models:/<name>/<version> (default: the champion)")


def _add_reproduce(sub) -> None:
    reproduce = sub.add_parser("reproduce", help="rerun the pipeline behind a model and check the metrics match",
                               description="Check out the model's commit into a temporary git worktree, restore the "
                                           "params.yaml and dvc.lock logged with it and its data from the DVC cache "
                                           "(or remote), rerun prepare..evaluate there without registering anything, "
                                           "and compare every metric with the registered run's. Exit code 0 on an "
                                           "exact match, 1 otherwise.")
    reproduce.add_argument("model", nargs="?", default=None, metavar="MODEL_URI",
                           help="models:/<name>@<alias> or models:/<name>/<version> (default: the champion)")
    reproduce.add_argument("--keep", action="store_true", help="keep the temporary worktree for inspection")


def _add_log(sub) -> None:
    log = sub.add_parser("log", help="send tracking entries that could not reach the tracking store earlier",
                         description="Entries that the tracking store did not accept after retries are kept in "
                                     ".graft/pending/; this sends them, in order, once the store is back.")
    log.add_argument("--pending", action="store_true", required=True, help="send every owed entry")


def _add_compare(sub) -> None:
    compare = sub.add_parser("compare", help="the last pipeline runs side by side: differing params, key metrics")
    compare.add_argument("--last", type=int, default=5, metavar="N", help="how many runs (default 5)")
    compare.add_argument("--out", default=".graft/compare.png", help="where to write the comparison PNG")


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="classify image files with a registered model (the champion by default)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    predict.add_argument("--model", default=None, metavar="MODEL_URI",
                         help="models:/<name>@<alias> or models:/<name>/<version> (default: the champion)")


def _add_promote(sub) -> None:
    promote = sub.add_parser(
        "promote", help="move the champion alias to a model version by hand, with a reason",
        description="Make VERSION of the registered model (tracking.model_name) the champion, bypassing the "
                    "promotion gate: for when the gate cannot compare it with the current champion (e.g. the "
                    "target's classes changed). The reason and the previous champion are recorded as tags on the "
                    "version (graft.promoted_by_hand, graft.previous_champion).")
    promote.add_argument("version", metavar="VERSION",
                         help="the version number, e.g. 3 (graft status shows the champion)")
    promote.add_argument("--reason", required=True, metavar="TEXT", help="why, recorded on the version (required)")


def _add_lr_find(sub) -> None:
    lr_find = sub.add_parser("lr-find", help="learning-rate range tests on the grafted model; suggest finetune.lr "
                                             "(head) and finetune.backbone_lr",
                             description="Train the grafted model for a few steps at exponentially growing rates, "
                                         "stop when the smoothed loss diverges, print suggested rates (fastai's "
                                         "valley, steep, minimum/10) and save a plot; twice: the head alone (for "
                                         "finetune.lr), then every layer (for finetune.backbone_lr, plot "
                                         "<out>_backbone.png). Changes no files but the plots. Needs replace_head "
                                         "to have run.")
    lr_find.add_argument("--start-lr", type=float, default=1e-7, help="first rate (default 1e-7)")
    lr_find.add_argument("--end-lr", type=float, default=10.0, help="last rate (default 10)")
    lr_find.add_argument("--num-it", type=int, default=100, help="steps (default 100)")
    lr_find.add_argument("--out", default=".graft/lr_find.png", help="where to save the plot (default .graft/lr_find.png)")


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="manage the images the pipeline reads (graft data add PATH)")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    add = data_sub.add_parser(
        "add", help="merge a folder of labelled images into the configured image-folder source",
        description="Check every image in PATH (PATH/<class_name>/<images>) and merge them into the image-folder "
                    "source of ingest.<domain> in params.yaml. Nothing is copied unless every image decodes and "
                    "every class is allowed. Images already present (same bytes) are skipped; name clashes are "
                    "renamed, never overwritten. DVC then sees ingest as stale, so the next `graft run` or "
                    "scheduled retraining picks the images up.")
    add.add_argument("path", metavar="PATH", help="folder of class subfolders of images")
    add.add_argument("--domain", choices=("target", "source"), default="target",
                     help="which domain's source receives them (default: target, the fine-tuning data)")
    add.add_argument("--dry-run", action="store_true", help="check and report what would be copied; copy nothing")


def _add_retrain(sub) -> None:
    sub.add_parser("retrain", help="run the retraining flow once now: retrain only if the data changed",
                   description="Check whether the data changed since the champion was trained (DVC staleness, "
                               "the champion's data hash, folders outside the repository); if so run the pipeline "
                               "and its promotion gate, else record why nothing was trained. Publishes a Markdown "
                               "report as a Prefect artifact and posts it to retrain.webhook when set.")


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="serve the retraining flow on a cron schedule (Prefect deployment)",
                           description="Register the deployment graft-retrain/<name> with the Prefect server at "
                                       "PREFECT_API_URL and run its scheduled flow runs from this process until "
                                       "Ctrl-C. Start a server first with `make server`.")
    serve.add_argument("--cron", required=True, metavar="EXPR", help='cron expression, e.g. "0 3 * * *" (03:00 daily)')
    serve.add_argument("--timezone", default="UTC", help="time zone of the cron expression (default UTC)")
    serve.add_argument("--name", default="scheduled", help="deployment name (default: scheduled)")


def _add_sweep(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="run a grid of parameter variants side by side and compare them",
        description="Run the pipeline (up to evaluate) once per combination of the -S values, each variant in its "
                    "own workspace under .graft/sweeps/<id>/<n>/ and its own process, --workers at a time. Stages "
                    "whose inputs are the same for several variants (e.g. pretrain when only finetune.* is swept) "
                    "run once and are restored from DVC's run cache for the others. MLflow gets one sweep run with "
                    "a pipeline run per variant; the sweep ends with a table and a PNG. The best variant is chosen "
                    "by validation accuracy. params.yaml is not changed.",
        epilog="example: graft sweep -S finetune.strategy=full,gradual_unfreeze -S finetune.lr=1e-3,3e-4 "
               "-S data.labels_per_class=5,20 --workers 2")
    sweep.add_argument("-S", "--set-param", dest="grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="a swept parameter and its values, comma-separated (a value in [...] is one value); "
                            "repeat -S for more parameters; every combination runs")
    sweep.add_argument("--workers", type=int, default=2, metavar="N",
                       help="variants run at once, one process each (default 2); torch threads = cores // N")
    sweep.add_argument("--promote-best", action="store_true",
                       help="register the best variant through the normal promotion gate (challenger; champion "
                            "only if it beats the current one)")
    sweep.add_argument("--keep-workspaces", action="store_true",
                       help="keep every variant's workspace (failed variants' are always kept)")
    sweep.add_argument("--runner", choices=("process", "dask"), default="process",
                       help="process: a local process pool (default); dask: Dask workers through prefect-dask, "
                            "a local cluster of --workers processes unless --address is given")
    sweep.add_argument("--address", metavar="tcp://HOST:PORT",
                       help="the scheduler of a running Dask cluster (implies --runner dask); its workers must see "
                            "this repository at the same path, and PREFECT_API_URL, an MLflow server "
                            "(MLFLOW_TRACKING_URI) and a default DVC remote are required, checked before anything runs")


def _add_ui(sub) -> None:
    ui = sub.add_parser("ui", help="start the MLflow UI for this repository's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")


def _add_dag(sub) -> None:
    dag = sub.add_parser("dag", help="check or rewrite dvc.yaml from the stages' declarations",
                         description="dvc.yaml is generated from each stage's declaration in graft/stages/ and its "
                                     "code (the stage module's import closure). --check shows how the file differs "
                                     "(exit code 1); --write rewrites it.")
    action = dag.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1, showing a diff, when dvc.yaml differs (default)")
    action.add_argument("--write", action="store_true", help="rewrite dvc.yaml")


def _fail(message: str, code: int = 2) -> int:
    print(f"graft: error: {message}", file=sys.stderr)
    return code


def _command_line() -> str:
    return " ".join(["graft", *sys.argv[1:]])


def cmd_run(args, root: Path) -> int:
    if args.dry_run:
        return _run(args, root)
    from graft.workspace_lock import hold

    with hold(root, _command_line()) as killed_holder:
        return _run(args, root, killed_holder)


def _end_orphaned_runs(root: Path, experiment: str | None = None) -> None:
    """End the MLflow runs that a killed graft process left RUNNING, and say so."""
    from graft import tracking
    from graft.config import load_params
    from graft.errors import GraftError

    if experiment is None:
        try:
            experiment = load_params(root / "params.yaml").tracking.experiment
        except GraftError:
            return  # the command does not need params.yaml; its housekeeping waits for a valid one
    ended = tracking.reap_orphaned_runs(root, experiment)
    if ended:
        pids = ", ".join(sorted({r["pid"] for r in ended}))
        names = ", ".join(r["name"] for r in ended)
        print(f"note: ended {len(ended)} MLflow run(s) left RUNNING by a graft process that is gone (pid {pids}): "
              f"{names}; they are marked KILLED", file=sys.stderr)


def _lost_record(root: Path) -> str | None:
    """Why the tracking store lacks the model version that metrics/register.json names (None: it holds it,
    or it cannot be told). Read without importing MLflow (graft.store_check)."""
    from graft.store_check import lost_record
    from graft.tracking import tracking_uri

    return lost_record(root, tracking_uri(root))


def _run(args, root: Path, killed_holder: dict | None = None) -> int:
    """Apply the -S overrides, then run. They stay in params.yaml only if the run succeeds: a run that fails
    (a graft error, a stage's exception, a non-zero exit; not Ctrl-C) puts the file's previous bytes back,
    so that a value that passes the schema but not the data (data.labels_per_class above what the data
    holds) does not break every later run. Stages committed meanwhile with the override simply look stale
    again to DVC."""
    from graft.config import apply_overrides
    from graft.paths import Paths

    paths = Paths.at(root)
    before = paths.params.read_bytes() if args.overrides and not args.dry_run and paths.params.exists() else None
    notes: list[str] = []  # a source's kind changed: the old kind's keys that were dropped
    params = apply_overrides(paths.params, args.overrides, write=not args.dry_run, tell=notes.append)
    for o in args.overrides:
        verb = ("would remove" if args.dry_run else "removed") if o.startswith("~") else \
            ("would set" if args.dry_run else "set")
        print(f"params.yaml: {verb} {o.removeprefix('~')}")
    for note in notes:
        print(f"params.yaml: {note}")
    if before is None:
        return _run_with(args, paths, params, killed_holder)
    try:
        code = _run_with(args, paths, params, killed_holder)
    except Exception as e:  # a GraftError, or a stage's own (an out-of-memory batch size fails on every run too)
        e.add_note(_restore_params(paths.params, before, args.overrides))  # said after the error itself
        raise
    if code not in (0, 130):  # 130: interrupted; rerunning continues with the override, as README says
        print(_restore_params(paths.params, before, args.overrides), file=sys.stderr)
    return code


def _restore_params(path: Path, before: bytes, overrides: list[str]) -> str:
    """Put params.yaml's previous bytes back; returns the line that says so."""
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_bytes(before)
    tmp.replace(path)
    return (f"params.yaml restored: the run with {' '.join('-S ' + o for o in overrides)} failed, so the "
            f"override{'s are' if len(overrides) > 1 else ' is'} not kept")


def _run_with(args, paths, params, killed_holder: dict | None) -> int:
    from graft.dvc import downstream, load_dag, missing_params, stale_stages
    from graft.summary import render, save_stage_statuses

    dag = load_dag(paths.root)
    missing = missing_params(paths.root, dag)
    if missing:
        return _fail("params.yaml lacks keys that dvc.yaml declares (DVC needs them written out): "
                     + ", ".join(missing) + ". Add them; graft/config.py documents each default.")
    if args.force and args.force not in dag:
        return _fail(f"--force {args.force!r}: no such stage; stages: {', '.join(dag)}")

    stale = {} if args.force else stale_stages(paths.root)
    if not args.force and not stale and (lost := _lost_record(paths.root)):
        doing = "`graft run` would re-record it" if args.dry_run else "Re-recording it"
        print(f"DVC says every stage is up to date, but {lost}.\n{doing}: `register` runs again from the "
              f"DVC-tracked models (nothing is retrained).")
        args.force = "register"
    if not args.force and not stale:
        if killed_holder:  # only then can runs be left RUNNING; otherwise MLflow is not even imported
            _quiet_environment()
            _end_orphaned_runs(paths.root, params.tracking.experiment)
        print("Pipeline is up to date: nothing to run.\n")
        _warn_if_owed(paths.root)
        save_stage_statuses(paths, {name: {"status": "up to date", "seconds": None} for name in dag})
        print(render(paths))
        return 0
    if args.dry_run:
        first = args.force or next(n for n in dag if n in stale)
        will_run = downstream(dag, first) if args.force else [n for n in dag if n in stale]
        after = [n for n in downstream(dag, first) if n not in will_run] if not args.force else []
        for name in will_run:
            why = "forced" if args.force else "; ".join(stale[name][:3])
            print(f"would run  {name:<13} ({why})")
        for name in after:
            print(f"then likely {name:<12} (its inputs will change)")
        return 0

    _quiet_environment()
    from flows.server import start_early

    prefect_api = start_early()  # Prefect's temporary server starts while torch and MLflow are imported
    from graft import tracking

    tracking.check_reachable(paths.root)
    _end_orphaned_runs(paths.root, params.tracking.experiment)
    from flows.logs import graft_errors_said_once
    from flows.pipeline import pipeline

    params_note = f" ({len(args.overrides)} override(s) applied)" if args.overrides else ""
    print(f"Running the pipeline{params_note}; stale: {', '.join(stale) or args.force}")
    try:
        with prefect_api(), graft_errors_said_once(enabled=not args.verbose):
            statuses = pipeline(root=str(paths.root), force=args.force)
    except KeyboardInterrupt:
        print("\ninterrupted: stages that finished are recorded in dvc.lock; `graft run` continues from there",
              file=sys.stderr)
        return 130
    print("\n" + render(paths, statuses))
    uri = tracking.tracking_uri(paths.root)
    where = uri if uri.startswith(("http://", "https://")) else "make ui (or graft ui), then open http://127.0.0.1:5000"
    print(f"\nSee every run in MLflow: {where}  [{params.tracking.experiment}]")
    return 0


def cmd_stage(args, root: Path) -> int:
    from graft.stages import STAGES
    from graft.workspace_lock import hold

    unknown = [name for name in args.name if name not in STAGES]
    if unknown:
        return _fail(f"unknown stage {unknown[0]!r}; stages: {STAGE_HELP}")
    from graft.runner import is_stage_worker, run_stage_worker

    if is_stage_worker():  # one of a torchrun group's processes: the launcher holds the lock and the runs
        if len(args.name) != 1:
            return _fail("a process of a torchrun group runs one stage; name one")
        _quiet_environment()
        run_stage_worker(args.name[0], root)
        return 0
    with hold(root, _command_line()):
        return _stage(args.name, root)


def _stage(names: list[str], root: Path) -> int:
    """Run `names` in order in this process (torch and MLflow imported once), under one pipeline run."""
    _quiet_environment()
    from graft import tracking
    from graft.config import load_params
    from graft.lineage import pipeline_run_id, run_tags
    from graft.paths import Paths
    from graft.runner import record_pipeline, run_stage
    from graft.stages import STAGES

    paths = Paths.at(root)
    params = load_params(paths.params)
    tracking.check_reachable(paths.root)
    _end_orphaned_runs(paths.root, params.tracking.experiment)
    pipeline_id = pipeline_run_id()
    # Stages run by `dvc repro` are grouped under one parent run per dvc process.
    parent = tracking.find_pipeline_run(paths.root, params.tracking.experiment, pipeline_id)
    if parent is None:
        parent = tracking.start_pipeline_run(paths.root, params.tracking.experiment, pipeline_id,
                                             params.model_dump(mode="json"), run_tags(paths.root, pipeline_id))
    for name in names:
        summary = run_stage(name, params, paths.root, parent, pipeline_id)
        if name == STAGES[-1]:
            record_pipeline(params, paths.root, parent, run_tags(paths.root, pipeline_id))
        print(f"{name}: done in {summary['seconds']:.1f}s")
    tracking.end_run(paths.root, parent)
    return 0


def cmd_status(args, root: Path) -> int:
    import time

    from graft.config import load_params
    from graft.dvc import locked_hash, stale_stages
    from graft.paths import Paths

    paths = Paths.at(root)
    params = load_params(paths.params)
    stale = stale_stages(paths.root)
    if stale:
        for name, reasons in stale.items():
            print(f"stale     {name:<13} {'; '.join(reasons[:3])}")
    else:
        print("stages    all up to date")
    _warn_if_owed(paths.root)
    print(f"data      data/raw {locked_hash(paths.root, 'ingest', 'data/raw') or 'not recorded yet (run graft run)'}")
    if lost := _lost_record(paths.root):
        print(f"tracking  {lost}; `graft run` re-records it")
    _quiet_environment()
    from graft import tracking

    _end_orphaned_runs(paths.root, params.tracking.experiment)
    champion = tracking.champion_version(paths.root, params.tracking.model_name)
    if champion:
        acc = champion["tags"].get("graft.gate.challenger_acc")
        age_h = (time.time() * 1000 - champion["created_ms"]) / 3.6e6
        age = f"{age_h:.1f} hours" if age_h < 48 else f"{age_h / 24:.1f} days"
        accuracy = f"{float(acc):.1%}" if acc else "?"
        print(f"champion  {params.tracking.model_name} v{champion['version']}: test accuracy {accuracy}, "
              f"registered {age} ago, trained on data {champion['tags'].get('graft.data_hash', '?')}")
    else:
        print(f"champion  none registered for {params.tracking.model_name}")
    from graft.retrain import last_outcome

    last = last_outcome(paths.root)
    if last:
        print(f"retrain   last run {last['finished_at']}: {_retrain_line(last)[len('retrain: '):]}")
    return 0


def cmd_ui(args, root: Path) -> int:
    from graft.tracking import DEFAULT_ARTIFACTS, tracking_uri

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(root),
           "--default-artifact-root", str((root / DEFAULT_ARTIFACTS).resolve()),
           "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    os.execv(sys.executable, cmd)


def cmd_data(args, root: Path) -> int:
    from graft.config import load_params
    from graft.data.add import apply_merge, plan_merge

    params = load_params(root / "params.yaml")
    plan = plan_merge(params, root, Path(args.path), args.domain)
    where = os.path.relpath(plan.destination, root) if plan.destination.is_relative_to(root) else str(plan.destination)
    counts = ", ".join(f"{cls} {n}" for cls, n in sorted(plan.per_class.items())) or "none"
    verb = "would add" if args.dry_run else "added"
    if not args.dry_run:
        apply_merge(plan)
    print(f"{verb} {len(plan.copies)} images to {where} ({counts})"
          + (f"; {len(plan.duplicates)} already there, skipped" if plan.duplicates else ""))
    if plan.new_classes:
        print(f"note: new classes {plan.new_classes}: the classifier's classes change, so the promotion gate cannot "
              f"compare the next model with the champion and will not promote it automatically", file=sys.stderr)
    if args.dry_run or not plan.copies:
        return 0
    inside = plan.destination.resolve().is_relative_to((root / "data" / "sources").resolve())
    print("DVC now sees `ingest` as stale (graft status)." if inside else
          "This folder is outside data/sources/, so DVC does not watch it; `graft retrain` notices the change.")
    print("next:   graft retrain        (or graft run; a served schedule picks it up by itself)\n"
          "then:   git add dvc.lock params.yaml && git commit -m 'data: add images'   # records the new data hash\n"
          "        dvc push                                                          # shares the data, with a remote")
    return 0


def cmd_retrain(args, root: Path) -> int:
    _quiet_environment()
    from flows.server import start_early

    prefect_api = start_early()  # Prefect's temporary server starts while torch and MLflow are imported
    from graft import tracking

    tracking.check_reachable(root)
    from flows.retrain import retrain
    from graft.retrain import last_outcome

    try:
        with prefect_api():
            outcome = retrain(root=str(root))
    except Exception:
        outcome = last_outcome(root)
        if outcome.get("status") != "failed":
            raise  # failed before its report was written: the error itself says what happened
        print("\n" + _retrain_line(outcome), file=sys.stderr)
        return 1
    print("\n" + _retrain_line(outcome))
    return 0


def _retrain_line(outcome: dict) -> str:
    if outcome.get("status") == "skipped":
        return f"retrain: {outcome['reason']}"
    if outcome.get("status") == "failed":
        return f"retrain: FAILED in {outcome.get('failed_stage')}: {outcome.get('error')}"
    version = outcome.get("version")
    verdict = ("promoted to champion" if outcome.get("promoted") else "kept as challenger") if version else ""
    return (f"retrain: registered v{version}, {verdict} ({outcome.get('gate')})" if version
            else f"retrain: {outcome.get('gate')}")


def cmd_serve(args, root: Path) -> int:
    _quiet_environment()
    from flows.retrain import serve

    serve(root, args.cron, args.timezone, args.name)
    return 0


def _model_uri(args, root: Path) -> str:
    if getattr(args, "model", None):
        return args.model
    from graft.config import load_params

    return f"models:/{load_params(root / 'params.yaml').tracking.model_name}@champion"


def cmd_lineage(args, root: Path) -> int:
    _quiet_environment()
    from graft.lineage import describe_version, format_lineage

    print(format_lineage(describe_version(root, _model_uri(args, root))))
    return 0


def cmd_reproduce(args, root: Path) -> int:
    _quiet_environment()
    from graft.reproduce import format_outcome, reproduce

    uri = _model_uri(args, root)
    outcome = reproduce(root, uri, keep=args.keep)
    print("\n" + format_outcome(outcome, uri))
    return 0 if outcome.matched else 1


def cmd_log(args, root: Path) -> int:
    _quiet_environment()
    from graft import tracking
    from graft.tracking import pending

    if not pending.count(root):
        print("no tracking entries are owed")
        _end_orphaned_runs(root)
        return 0
    tracking.check_reachable(root)
    sent, runs = tracking.send_pending(root)
    print(f"sent {sent} owed tracking entries for {runs} run(s) to {tracking.tracking_uri(root)}")
    _end_orphaned_runs(root)  # after the owed entries: a run whose end was owed is not orphaned
    return 0


def _warn_if_owed(root: Path) -> None:
    from graft.tracking import pending

    owed = pending.count(root)
    if owed:
        print(f"note: {owed} tracking entries are still owed to MLflow (the store was unreachable); "
              f"`graft log --pending` sends them", file=sys.stderr)


def cmd_compare(args, root: Path) -> int:
    _quiet_environment()
    from graft.compare import compare_runs, comparison_png, format_table
    from graft.config import load_params

    params = load_params(root / "params.yaml")
    runs, differing = compare_runs(root, params.tracking.experiment, args.last)
    print(format_table(runs, differing))
    if runs:
        out = comparison_png(runs, differing, root / args.out)
        print(f"\ncomparison plot: {out}")
    return 0


def cmd_predict(args, root: Path) -> int:
    _quiet_environment()
    from graft.predict import predict_files

    version, rows = predict_files(root, _model_uri(args, root), [Path(p) for p in args.images])
    print(f"{version['name']} v{version['version']} ({', '.join(version['aliases']) or 'no alias'})")
    width = max(len(str(p)) for p, _, _ in rows)
    for path, label, prob in rows:
        print(f"{str(path):<{width}}  {label:<20} {prob:6.1%}")
    return 0


def cmd_promote(args, root: Path) -> int:
    version = args.version[1:] if args.version[:1] in ("v", "V") else args.version
    if not version.isdigit():
        return _fail(f"VERSION {args.version!r}: expected a version number, e.g. 3")
    reason = " ".join(args.reason.split())
    if not reason:
        return _fail("--reason is empty: say why this version becomes champion without the gate "
                     "(it is recorded on the version)")
    _quiet_environment()
    from graft import tracking
    from graft.config import load_params

    name = load_params(root / "params.yaml").tracking.model_name
    version = str(int(version))
    previous = tracking.promote_by_hand(root, name, version, reason)
    if previous == version:
        print(f"{name} v{version} is already the champion; nothing moved")
    else:
        was = f"v{previous}" if previous else "none"
        print(f"{name}: champion moved from {was} to v{version} by hand ({reason})")
    return 0


def cmd_lr_find(args, root: Path) -> int:
    from graft.config import load_params
    from graft.paths import Paths
    from graft.training import lr_find

    paths = Paths.at(root)
    lr_find.run(load_params(paths.params), paths, start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it,
                out=paths.root / args.out)
    return 0


def cmd_sweep(args, root: Path) -> int:
    import time

    from graft.sweep import plan
    from graft.workspace_lock import hold

    if args.workers < 1:
        return _fail("--workers must be at least 1")
    variants = plan(root, args.grid)  # every variant validated before anything is written
    _quiet_environment()
    from flows.sweep import run_sweep, task_runner

    # A remote cluster is checked here, before any work.
    runner = task_runner(root, len(variants), args.workers, args.runner, args.address)
    with hold(root, _command_line()):
        from graft import tracking

        tracking.check_reachable(root)
        print(f"Sweeping {len(variants)} variants: " + "; ".join(f"{v.number} {v.name}" for v in variants))
        start = time.perf_counter()
        outcome = run_sweep(root, args.grid, runner, workers=args.workers, promote_best=args.promote_best,
                            keep_workspaces=args.keep_workspaces)
    print(f"\nSweep {outcome['sweep_id']} finished in {time.perf_counter() - start:.0f}s\n\n{outcome['table']}")
    print(f"\ncomparison plot: {outcome['png']} (also on the MLflow sweep run {outcome['sweep_run_id']})")
    top, promoted = outcome["best"], outcome["promoted"]
    if promoted:
        print(f"registered {promoted['model_name']} v{promoted['version']} ({', '.join(promoted['aliases'])}): "
              f"{promoted['reason']}")
    elif top:
        print(f"to keep the best: graft run {' '.join('-S ' + o for o in top['overrides'])}"
              f"  (or graft sweep ... --promote-best)")
    failed = [r for r in outcome["results"] if "error" in r]
    for r in failed:
        print(f"variant {r['number']} {r['name']} failed; its workspace is kept: {r['workspace']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_dag(args, root: Path) -> int:
    from graft import dvc_yaml

    return dvc_yaml.main(["--write" if args.write else "--check", "--root", str(root)])


COMMANDS = {"run": cmd_run, "stage": cmd_stage, "status": cmd_status, "ui": cmd_ui, "lr-find": cmd_lr_find,
            "lineage": cmd_lineage, "reproduce": cmd_reproduce, "compare": cmd_compare, "predict": cmd_predict,
            "promote": cmd_promote, "log": cmd_log, "data": cmd_data,
            "retrain": cmd_retrain, "serve": cmd_serve, "sweep": cmd_sweep, "dag": cmd_dag}


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        # The reader went away (`graft run --dry-run | head -1`): stop quietly, as other tools in a pipe do.
        # stdout is pointed at /dev/null so that the interpreter's own flush at exit raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a process a closed pipe ended


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    root = Path(args.root).resolve()
    if not (root / "dvc.yaml").exists():
        return _fail(f"{root} has no dvc.yaml: run graft from the repository root, or pass -C PATH")
    from graft.errors import GraftError, UsageError

    try:
        return COMMANDS[args.command](args, root)
    except (GraftError, FileNotFoundError) as e:
        if args.verbose:
            import traceback

            traceback.print_exc()
        code = _fail(str(e), code=2 if isinstance(e, UsageError) else 1)
        if not args.verbose:  # the traceback already ended with them
            for note in getattr(e, "__notes__", ()):
                print(note, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
