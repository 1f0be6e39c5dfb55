"""``swat-dist data ...``: convert, verify, plan, and the datasets we ship (digits, seg-digits, synthetic).

Parsing only; the work lives in the modules named by each handler, imported when the command runs.
User errors are ``ValueError``s with one-line messages; ``cli.main`` prints them without a traceback.
"""

from __future__ import annotations

import argparse

from .sources.location import S3Location, local_only, parse_location  # string work only: no boto3, no torch


def _convert(args: argparse.Namespace) -> int:
    from .convert.base import ConvertOptions
    from .convert.front import convert

    local_only(args.src, "SRC")  # a URL is never a local folder named "s3:"
    where = parse_location(args.dst, "DST")

    if args.task == "segment" and args.max_resolution is not None:
        raise ValueError("--max-resolution: --task segment keeps every image at its source size (masks stay exact)")
    opts = ConvertOptions(
        fmt=args.format,
        task=args.task,
        num_classes=args.num_classes,
        reduce_zero_label=args.reduce_zero_label,
        workers=args.workers,
        shard_bytes=int(args.shard_size_mb * 2**20),
        max_resolution=512 if args.max_resolution is None else args.max_resolution,
        jpeg_quality=args.jpeg_quality,
        compress_probability=args.compress_probability,
        strict=args.strict,
        overwrite=args.overwrite,
    )
    if isinstance(where, S3Location):
        from .convert.upload import convert_to_store  # boto3: only for a destination in an object store

        return convert_to_store(args.src, where, opts)
    return convert(args.src, args.dst, opts)


def _verify(args: argparse.Namespace) -> int:
    from .convert.verify import verify

    parse_location(args.dst, "DST")  # a folder or s3://; any other scheme is one line, never a folder "gs:"

    return verify(args.dst, workers=args.workers)


def _plan(args: argparse.Namespace) -> int:
    from .loaders.plan import check_layout
    from .sources.index import read_index

    index = read_index(args.dst)
    split = {name: info.samples for name, info in index.splits.items()}
    r = check_layout(split.get("train", 0), split.get("val", 0), args.world_size, args.batch_size, args.workers)
    print(
        f"{args.dst}: {r.train_samples} train / {r.val_samples} val samples; {r.world_size} ranks x batch "
        f"{r.batch_size} (global {r.world_size * r.batch_size}), {r.workers} loader workers per rank\n"
        f"train: {r.train_steps} steps per epoch on every rank; {r.train_dropped} samples left out per epoch "
        f"(a different set each epoch)\n"
        f"val:   {r.val_steps} forward passes on every rank; samples per rank {list(r.val_per_rank)} "
        f"(each evaluated exactly once, short ranks padded and the padding not counted)\n"
        "order: a function of (seed, epoch) only - the same for any number of workers"
    )
    return 0


def _digits(args: argparse.Namespace) -> int:
    from .sets.digits import write_digits

    local_only(args.dst, "DST")

    return write_digits(args.dst, size=args.size, val_fraction=args.val_fraction, seed=args.seed)


def _seg_digits(args: argparse.Namespace) -> int:
    from .sets.seg_digits import write_seg_digits

    local_only(args.dst, "DST")

    return write_seg_digits(args.dst, train=args.train, val=args.val, size=args.size, seed=args.seed)


def _photo_digits(args: argparse.Namespace) -> int:
    from .sets.photo_digits import write_photo_digits

    local_only(args.dst, "DST")

    return write_photo_digits(args.dst, train=args.train, val=args.val, size=args.size, seed=args.seed)


def _synthetic(args: argparse.Namespace) -> int:
    from .sets.synthetic import write_synthetic

    local_only(args.dst, "DST")

    return write_synthetic(
        args.dst, classes=args.classes, images=args.images, size=args.size, val_images=args.val_images, seed=args.seed
    )


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="convert, verify and plan datasets; write the shipped ones")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    c = cmds.add_parser("convert", help="ImageNet-style (or ADE20K-style) folder -> WebDataset shards / FFCV files")
    c.add_argument("src", help="train/<class>/* and val/<class>/*; --task segment: images/ + annotations/ (ADE)")
    c.add_argument("dst", help="output folder (created; index.json is written last)")
    c.add_argument("--format", choices=["wds", "ffcv"], required=True)
    c.add_argument("--task", choices=["classify", "segment"], default="classify", help="segment: image + mask pairs")
    c.add_argument("--num-classes", type=int, default=150, help="segment: classes after the mapping (ADE20K: 150)")
    c.add_argument(
        "--reduce-zero-label",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="segment: raw 0 is unlabelled (ignored), raw l is class l-1 (ADE20K's convention)",
    )
    c.add_argument("--workers", type=int, default=0, help="decode/encode processes (0 = all cores)")
    c.add_argument("--shard-size-mb", type=float, default=256.0, help="wds: upper bound of a shard's size")
    c.add_argument(
        "--max-resolution", type=int, default=None, help="longer side cap, resized down if larger (512; not segment)"
    )
    c.add_argument("--jpeg-quality", type=int, default=90)
    c.add_argument("--compress-probability", type=float, default=1.0, help="ffcv: share stored as JPEG, not raw")
    c.add_argument("--strict", action="store_true", help="any skipped file is an error (exit 1)")
    c.add_argument("--overwrite", action="store_true", help="replace a complete dataset at DST")
    c.set_defaults(func=_convert)

    v = cmds.add_parser("verify", help="decode every record and check every count against the index")
    v.add_argument("dst", help="a converted dataset: a folder or s3://bucket/prefix (shards downloaded one at a time)")
    v.add_argument("--workers", type=int, default=0)
    v.set_defaults(func=_verify)

    p = cmds.add_parser("plan", help="steps per rank for a world size / batch size / workers layout")
    p.add_argument("dst", help="a converted dataset (with index.json)")
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True, help="per rank")
    p.add_argument("--workers", type=int, default=4, help="loader workers per rank")
    p.set_defaults(func=_plan)

    d = cmds.add_parser("digits", help="scikit-learn's 1,797 handwritten digits as an ImageNet-style folder")
    d.add_argument("dst")
    d.add_argument("--size", type=int, default=32, help="side in pixels (upscaled from 8)")
    d.add_argument("--val-fraction", type=float, default=0.2)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_digits)

    g = cmds.add_parser("seg-digits", help="digits pasted on real photos: a small ADE20K-layout segmentation set")
    g.add_argument("dst")
    g.add_argument("--train", type=int, default=1000, help="training images")
    g.add_argument("--val", type=int, default=100, help="validation images")
    g.add_argument("--size", type=int, default=48, help="longest side; each side is drawn in [3/4 size, size]")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_seg_digits)

    h = cmds.add_parser("photo-digits", help="a digit pasted on a real photo crop: a classification set to compare on")
    h.add_argument("dst")
    h.add_argument("--train", type=int, default=12000, help="training images")
    h.add_argument("--val", type=int, default=2000, help="validation images")
    h.add_argument("--size", type=int, default=32, help="side in pixels: 32 or 64")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=_photo_digits)

    s = cmds.add_parser("synthetic", help="random JPEGs as an ImageNet-style folder, for throughput work")
    s.add_argument("dst")
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--images", type=int, default=1000, help="train images in all")
    s.add_argument("--val-images", type=int, default=None, help="val images in all (default: images / 5)")
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synthetic)
