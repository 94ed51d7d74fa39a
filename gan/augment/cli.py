"""``gan augment``: write labelled synthetic data from a registered generator.

    gan augment --model models:/digits-gan@champion --num 100 --per-class --out synth/ --format image_folder --seed 0
    gan augment --model models:/photos-stackgan@champion --num 50 --captions captions.txt --out synth/   # 50 per caption
"""

from __future__ import annotations

import argparse

from gan.augment.stream import DEFAULT_BATCH_SIZE, check_seed, generate, read_captions_file
from gan.augment.writers import FORMATS, check_output_dir, write_dataset
from gan.errors import GanError
from gan.sampling import check_count

# ---------------------------------------------------------------- the `gan augment` command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan augment", description="Generate labelled synthetic data from a registered generator.")
    parser.add_argument("--model", required=True, help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--num", type=int, required=True, help="samples in all, or per class with --per-class")
    parser.add_argument("--per-class", action="store_true", help="--num samples for every class (of --labels, or all)")
    parser.add_argument("--labels", nargs="+", help="class indices or names (cycled); default: all classes")
    parser.add_argument("--captions", help="text-conditioned generators: a file of captions, one per line; --num samples for each")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--format", choices=FORMATS, default="npz")
    parser.add_argument("--seed", type=int, default=None, help="default: random (recorded in metadata.json)")
    parser.add_argument("--truncation", type=float, default=None, help="truncation trick: a threshold on z (> 0), or psi in w-space (0..1) for a StyleGAN2 generator")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """``gan augment``: every check that needs no server runs before the model is loaded."""
    args = build_parser().parse_args(argv)
    check_count(args.num)
    check_seed(args.seed)
    check_output_dir(args.out)
    if args.truncation is not None and not args.truncation >= 0:  # 0 is valid as psi; a z threshold is checked once G is loaded
        raise GanError(f"--truncation {args.truncation} is invalid; use a positive threshold such as 1.0 (psi 0..1 for a StyleGAN2 generator), or omit it.")
    captions = read_captions_file(args.captions) if args.captions else None
    # load with n = --num first: the class count needed for --per-class is known only then
    stream = generate(args.model, args.num, args.labels, args.seed, truncation=args.truncation, batch_size=args.batch_size, captions=captions)
    if captions:
        stream.n = args.num * len(captions)  # cycling gives each caption exactly --num
        _, unknown = stream.generator.caption_embeddings(captions)
        if unknown:
            print(f"gan augment: words this generator's text encoder does not know, read as <unk>: {', '.join(unknown)}")
    elif args.per_class:
        if not stream.conditional:
            raise GanError(f"--per-class needs a class-conditional generator; {stream.model.uri} is unconditional, drop --per-class.")
        stream.n = args.num * len(stream.labels or stream.class_names)  # cycling gives each class exactly --num
    write_dataset(stream, args.out, args.format, progress=not args.no_progress)
    print(f"wrote {stream.n} samples of {stream.model.name} v{stream.model.version} (from {stream.model.requested}) to {args.out} [{args.format}]")
    return 0
