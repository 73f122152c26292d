"""`sampo-engine weights`: list, locate and download the official SAM checkpoints."""

from __future__ import annotations


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "weights",
        help="list, locate and download the official SAM checkpoints",
        description=(
            "The official Segment Anything checkpoints, cached in $SAMPO_CACHE_DIR/checkpoints "
            "(default: the user cache folder, ~/.cache/sampo/checkpoints on Linux). "
            "$SAMPO_WEIGHTS_BASE_URL replaces the download site (a mirror or file:// folder)."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each model: file, size, whether it is cached, and where")
    path = actions.add_parser(
        "path",
        help="print where MODEL's checkpoint is (or would be) cached; exit status 1 if absent",
    )
    path.add_argument("model", metavar="MODEL", help="vit_b, vit_l or vit_h")
    download = actions.add_parser("download", help="download and verify MODEL's checkpoint")
    download.add_argument("model", metavar="MODEL", help="vit_b, vit_l or vit_h")
    download.add_argument(
        "--force", action="store_true", help="download again even if a complete file is cached"
    )
    download.add_argument("--url", default=None, help="download from this URL instead")
    download.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for the server (default 15)"
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"  # pragma: no cover


def _packaged_heads() -> list[tuple]:
    """Rows for the small networks packaged beside the shipped model: its split head
    (docs/split_head.md) and the nucleus type head every model's T2 by nucleus reads
    (docs/type_head.md)."""
    from sampo_engine.models.availability import shipped_weights_dir
    from sampo_engine.models.registry import SPECS
    from sampo_engine.models.type_head import SHIPPED_FILE

    folder = shipped_weights_dir()
    rows = []
    named = [(f"{n} split head", spec.split_head) for n, spec in SPECS.items() if spec.split_head]
    for name, file in [*named, ("type head (every model)", SHIPPED_FILE)]:
        path = folder / file
        if path.is_file():
            rows.append((name, file, _human(path.stat().st_size), "shipped", str(path)))
    return rows


def run(args) -> int:
    import sys

    from sampo_engine.models import checkpoints as weights

    if args.action == "list":
        rows = [weights.describe(model) for model in weights.CHECKPOINTS]
        header = ("MODEL", "FILE", "SIZE", "CACHED", "PATH")
        table = [
            (r["model"], r["file"], _human(r["size"]), "yes" if r["cached"] else "no", r["path"])
            for r in rows
        ]
        from sampo_engine.models.availability import SHIPPED, model_states

        for state in model_states():  # weights that ship inside the package
            if state.state == SHIPPED:
                table.append(
                    (
                        state.name,
                        state.path.name,
                        _human(state.size or 0),
                        "shipped",
                        str(state.path),
                    )
                )
        table += _packaged_heads()
        widths = [max(len(str(c)) for c in col) for col in zip(header, *table)]
        for line in (header, *table):
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
        return 0

    if args.action == "path":
        path = weights.checkpoint_path(args.model)
        print(path)
        if weights.find_checkpoint(args.model) is None:
            print(
                f"not downloaded yet: run `sampo-engine weights download {args.model}`",
                file=sys.stderr,
            )
            return 1
        return 0

    if args.action == "download":
        kwargs = {"url": args.url, "progress": not args.no_progress, "force": args.force}
        if args.timeout is not None:
            kwargs["timeout"] = args.timeout
        path = weights.download_checkpoint(args.model, **kwargs)
        print(path)
        return 0
    return 2  # pragma: no cover  (argparse requires an action)
