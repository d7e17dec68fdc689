"""The commands that measure and tune retrieval: eval, tune, features."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike.cli.args import path_arg
from lookalike.cli.common import CommandError, Commands, open_collection, show_progress
from lookalike.cli.output import emit
from lookalike.errors import EXIT_OK
from lookalike.features.base import METRICS


def add_eval_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike eval``."""
    p = commands.add_parser(
        "eval", parents=[common], help="retrieval quality on labelled images (mAP, P@k, ...)"
    )
    p.add_argument(
        "folder", metavar="DIR", type=path_arg, help="labelled images (one sub-folder per class)"
    )
    p.add_argument(
        "--labels", metavar="CSV", type=path_arg, help="path,label file instead of the folders"
    )
    p.add_argument(
        "--features",
        help="settings side by side, e.g. deep,deep+center+qe,deep+dba,deep+pca256,color "
        "(default: deep,deep+center+qe: stored vectors, and as search ranks)",
    )
    p.add_argument("--html", metavar="FILE", type=path_arg, help="write an offline HTML report")
    p.add_argument(
        "--copies", action="store_true", help="run the copy-detection benchmark on DIR instead"
    )
    p.set_defaults(run=cmd_eval)


def add_tune_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike tune``."""
    p = commands.add_parser(
        "tune", parents=[common], help="learn a projection from labelled images for search"
    )
    p.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        type=path_arg,
        help="the images (default: CSV's folder)",
    )
    p.add_argument(
        "--labels",
        metavar="CSV",
        type=path_arg,
        help="path,label file (else one folder per class)",
    )
    p.add_argument("--clear", action="store_true", help="forget the stored projection")
    p.add_argument(
        "--dry-run", action="store_true", help="measure on held-out splits, store nothing"
    )
    p.set_defaults(run=cmd_tune, usage_error=p.error)


def add_features_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike features``."""
    p = commands.add_parser(
        "features", parents=[common], help="the descriptors on offer: size, metric, speed"
    )
    p.add_argument("--no-speed", action="store_true", help="skip measuring encode speed (faster)")
    p.set_defaults(run=cmd_features)


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval quality on labelled images (or ``--copies``: the copy-detection benchmark)."""
    from lookalike.eval.labels import LabelsError
    from lookalike.eval.runner import EvalError, run_eval, table

    def say(text: str) -> None:
        if not args.quiet and not args.json:
            print(text, file=sys.stderr)

    if args.copies:
        from lookalike.eval.copy_eval import copy_table, run_copy_eval

        try:
            r = run_copy_eval(Path(args.folder), progress=show_progress(args), say=say)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        emit(args, r, copy_table(r))
        return EXIT_OK
    try:
        run = run_eval(
            Path(args.folder),
            Path(args.labels) if args.labels else None,
            args.features,
            db=Path(args.db).expanduser() if args.db else None,
            progress=show_progress(args),
            say=say,
        )
    except (EvalError, LabelsError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    if args.html:
        from lookalike.eval.report import write_html_report

        write_html_report(run, Path(args.html))
        say(f"report: {args.html}")
    emit(args, run.as_dict(), table(run))
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    """Learn a projection from labelled images for search (``--clear``: forget it)."""
    from lookalike.eval.labels import LabelsError, check_labels_file
    from lookalike.eval.tuning import labelled_vectors, save_tuning, tune_collection
    from lookalike.features.projection import TuneError

    with open_collection(args, create=False) as col:
        if args.clear:
            save_tuning(col, None)
            emit(args, {"cleared": True}, "tuning forgotten: search uses the stored vectors")
            return EXIT_OK
        if not args.labels and not args.folder:
            args.usage_error("give --labels CSV, or DIR with one sub-folder per class")
        try:
            # a missing CSV fails here, before anything is listed
            if args.folder:
                labels = check_labels_file(args.labels) if args.labels else None
                folder = Path(args.folder)
            else:
                # without DIR only the files the CSV names are read: never a walk of its folder
                # (a CSV given as `x.csv` in the home folder, or in /, would list all of it)
                labels = check_labels_file(args.labels)
                folder = labels.parent
            walk = args.folder is not None
            vectors, names, excluded, notes = labelled_vectors(col, folder, labels, walk)
            report = tune_collection(col, vectors, names, excluded, store=not args.dry_run)
        except (LabelsError, TuneError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
    payload = report.as_dict() | {"notes": notes}
    lines = [f"note: {n}" for n in notes]
    lines.append(f"{report.images} labelled images, {report.labels} labels")
    for s in report.splits:
        kind = "new images of known labels" if s.split == "image" else "labels never seen"
        lines.append(
            f"test split by {s.split} ({kind}; fitted on {s.train_images}, measured on "
            f"{s.test_images}): mAP {s.before:.3f} -> {s.after:.3f} "
            f"({100 * (s.after - s.before):+.1f} points)"
        )
    lines.append(
        f"projection to {report.dim} dimensions (shrinkage {report.shrinkage}) "
        + ("stored: search uses it (--plain to compare)" if report.stored else "not stored")
    )
    emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_features(args: argparse.Namespace) -> int:
    """The descriptors on offer: size per image, metric, and (unless --no-speed) speed."""
    from lookalike.features.speed import feature_table

    rows = feature_table(measure=not args.no_speed)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    print(f"{'name':<13} {'kind':<8} {'bytes/image':>11}  {'metric':<12} {'images/s':>9}  what")
    for r in rows:
        speed = f"{r['images_per_s']:.0f}" if r.get("images_per_s") else "-"
        print(
            f"{r['name']:<13} {r['kind']:<8} {r['bytes_per_image']:>11}  {r['metric']:<12} "
            f"{speed:>9}  {r['description']}"
        )
    print("\nscore semantics (larger is closer):")
    for metric, meaning in METRICS.items():
        print(f"  {metric:<13} {meaning}")
    return EXIT_OK
