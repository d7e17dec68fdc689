"""The commands that query the index: search (by image, by text, or both) and check."""

from __future__ import annotations

import argparse
import json
import sys

from lookalike.cli.args import MAX_CHECK_K, MAX_K, MAX_THREADS, fraction, int_in, path_arg, text_arg
from lookalike.cli.common import CommandError, Commands, open_collection
from lookalike.cli.output import jsonable, match_json, table
from lookalike.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from lookalike.features.registry import UnknownFeature
from lookalike.filters import FilterError, Node
from lookalike.images import ImageError


def add_search_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike search``."""
    p = commands.add_parser("search", parents=[common], help="find images similar to a query")
    p.add_argument(
        "queries",
        nargs="*",
        type=path_arg,
        metavar="IMAGE",
        help="query image files (or --text)",
    )
    p.add_argument("-k", type=int_in(1, MAX_K), default=10, help="results per query (default 10)")
    p.add_argument(
        "-f", "--files", action="store_true", help="print matching paths only, one per line"
    )
    p.add_argument(
        "--threads", type=int_in(1, MAX_THREADS), help="inference threads (default: cores)"
    )
    p.add_argument("--feature", help="descriptor to compare (default: the index's first, deep)")
    p.add_argument("--metric", help="compare under another metric: cosine, l2, chi2, intersection")
    p.add_argument(
        "--rerank", metavar="FEATURE", help="order a shortlist exactly by this feature (deep)"
    )
    p.add_argument(
        "--shortlist",
        type=int_in(1, MAX_K),
        help="shortlist size for --rerank (max(200, 20k))",
    )
    p.add_argument(
        "--where",
        metavar="EXPR",
        help="only images whose metadata passes, e.g. \"category = 'shoes' and price < 50\"",
    )
    p.add_argument("--folder", metavar="DIR", type=path_arg, help="only images inside this folder")
    p.add_argument(
        "--plain",
        action="store_true",
        help="deep: plain cosine of the stored vectors (no tuning, centring, query expansion)",
    )
    p.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        type=text_arg,
        help='search by words, e.g. "a cup of espresso" (ImageNet classes and their WordNet '
        "ancestors; repeat for several queries)",
    )
    p.add_argument(
        "--image", metavar="IMAGE", help="with --text: an image whose look the results share"
    )
    p.add_argument(
        "--weight",
        type=fraction,
        default=0.5,
        help="with --text and --image: the text's share of the score (0..1, default 0.5)",
    )
    p.add_argument(
        "--model",
        choices=("concepts", "clip"),
        help="with --text: ImageNet concepts (built in) or the index's own CLIP (the default "
        "when it was indexed with --model clip-onnx:DIR)",
    )
    p.set_defaults(run=cmd_search, usage_error=p.error)


def add_check_parser(commands: Commands, common: argparse.ArgumentParser) -> None:
    """``lookalike check``."""
    p = commands.add_parser(
        "check", parents=[common], help="is this picture a copy of one in the index? (verdict)"
    )
    p.add_argument("queries", nargs="+", type=path_arg, metavar="IMAGE", help="suspect image files")
    p.add_argument("-k", type=int_in(1, MAX_CHECK_K), default=10, help="candidates per region (10)")
    p.set_defaults(run=cmd_check)


def cmd_search(args: argparse.Namespace) -> int:
    """The most similar images to each query image (or to ``--text``); status 1 when a query
    cannot be read."""
    from lookalike.filters import parse_filter, to_sql

    try:
        where = parse_filter(args.where) if args.where is not None else None
        to_sql(where)  # every limit checked before any query image is read
    except FilterError as exc:
        print(f"lookalike: bad --where: {exc}", file=sys.stderr)
        return EXIT_USAGE
    filtered = where is not None or args.folder is not None
    if args.text is not None or args.image is not None:
        return _search_text(args, where, filtered)
    if not args.queries:
        args.usage_error("give at least one IMAGE, or --text TEXT")  # exits with status 2
    status = EXIT_OK
    with open_collection(args, create=False, threads=args.threads) as col:
        for query in args.queries:
            try:
                matches = col.search(
                    query,
                    k=args.k,
                    feature=args.feature,
                    metric=args.metric,
                    rerank=args.rerank,
                    shortlist=args.shortlist,
                    where=where,
                    folder=args.folder,
                    expand=not args.plain,
                )
            except UnknownFeature as exc:
                raise CommandError(str(exc)) from None
            except ImageError as exc:
                status = EXIT_ERROR
                print(f"lookalike: cannot read query {query}: {exc.reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"query": query, "error": exc.reason, "results": []}))
                continue
            if args.json:
                results = [match_json(m) for m in matches]
                print(json.dumps({"query": query, "results": results}, ensure_ascii=False))
            elif args.files:
                for m in matches:
                    print(m.path)
            else:
                print(table(query, matches, filtered))
    return status


def _search_text(args: argparse.Namespace, where: Node | None, filtered: bool) -> int:
    """``search --text`` (optionally with ``--image``): one result list per text."""
    from lookalike.text.encoder import TextModelMissing
    from lookalike.text.scoring import default_text_model

    if not args.text:
        args.usage_error("--image combines an image with --text TEXT")
    if args.queries:
        args.usage_error("with --text, give the image to combine as --image IMAGE")
    with open_collection(args, create=False, threads=args.threads) as col:
        try:
            if args.model == "concepts" or col.clip_info() is None:
                default_text_model().prepare(progress=not args.quiet)
        except TextModelMissing as exc:
            raise CommandError(str(exc)) from None
        for text in args.text:
            try:
                results = col.search_text(
                    text, k=args.k, image=args.image, weight=args.weight,
                    where=where, folder=args.folder, model=args.model,
                )  # fmt: skip
            except (UnknownFeature, ValueError) as exc:
                raise CommandError(str(exc)) from None
            except ImageError as exc:
                raise CommandError(f"cannot read --image {args.image}: {exc.reason}") from None
            if results.warning and not args.quiet:
                print(f"lookalike: warning: {text}: {results.warning}", file=sys.stderr)
            if args.json:
                payload = results.query.as_dict() | {
                    "model": results.model,
                    "query": text,
                    "image": args.image,
                    "weight": args.weight if args.image else None,
                    "warning": results.warning,
                    "results": [match_json(m) for m in results],
                }
                print(json.dumps(payload, ensure_ascii=False))
            elif args.files:
                for m in results:
                    print(m.path)
            else:
                concepts = ", ".join(c.name for c in results.matched_concepts) or "no concept"
                if results.model != "concepts":
                    concepts = results.model
                label = f'"{text}" ({concepts}' + (f" + {args.image}" if args.image else "") + ")"
                print(table(label, results, filtered))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """A verdict for each suspect image: a copy of one in the index, or not."""
    from lookalike.copies.check import check_copy

    status = EXIT_OK
    with open_collection(args, create=False) as col:
        for query in args.queries:
            try:
                result = check_copy(col, query, k=args.k)
            except ImageError as exc:
                status = EXIT_ERROR
                print(f"lookalike: cannot read query {query}: {exc.reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"query": query, "error": exc.reason, "verdict": None}))
                continue
            match = result.match
            if args.json:
                payload = {
                    "query": query,
                    "verdict": result.verdict,
                    "match": None
                    if match is None or result.verdict != "copy"
                    else {"path": match.path, "id": match.id, "score": round(result.score, 6)},
                    "score": round(result.score, 6),
                    "evidence": result.evidence,
                }
                print(json.dumps(payload, ensure_ascii=False, default=jsonable))
            elif result.verdict == "copy" and match is not None:
                print(
                    f"{query}: copy of {match.path} (score {result.score:.3f}; "
                    f"{_evidence_text(result.evidence)})"
                )
            else:
                print(f"{query}: no copy found (score {result.score:.3f})")
    return status


def _evidence_text(evidence: dict) -> str:
    """Why a copy is one, for people: matching points, the transform, the similarity."""
    parts = []
    if "inliers" in evidence:
        parts.append(f"{evidence['inliers']} matching points")
    if "transform" in evidence:
        parts.append(str(evidence["transform"]))
    if "cosine" in evidence:
        parts.append(f"similarity {evidence['cosine']:.3f}")
    return ", ".join(parts)
