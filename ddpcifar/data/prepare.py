"""`python data_prep.py`: convert CIFAR-10 into train.beton, test.beton and meta.json.

Beside the betons it writes the same pixels as raw arrays (`<split>_images.npy`,
`<split>_labels.npy`), which the in-memory loader reads without FFCV. `--synthetic N` writes a
seeded CIFAR-10-shaped set instead (benchmarks and smoke runs where CIFAR-10 cannot be sent;
labelled "synthetic, not for accuracy").

Everything is built in a temporary directory beside --out and renamed into place at the end,
so --out is either absent/untouched (any error) or complete.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.progress import Progress

from ddpcifar.atomic import write_json
from ddpcifar.data import cifar_pickle, image_folder
from ddpcifar.data.meta import (CIFAR10_CLASSES, IMAGE_SHAPE, META_FILE, META_FORMAT,
                                SPLITS, SYNTHETIC_LABEL, Cifar10Source, DataMeta, SourceInfo,
                                SplitArrays, array_names, channel_stats, class_counts,
                                sha256_file, write_arrays)
from ddpcifar.errors import UserError, cli_main
from ddpcifar.progress import download_progress, steps_progress, task_starter

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CONNECT_TIMEOUT_S = 10.0  # also the read timeout of each block: a stalled server fails fast
SOURCE_HINT = ("use --source with a local cifar-10-python.tar.gz, "
               "cifar-10-batches-py/ or train/,test/ image folders")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="data_prep.py",
        description="Convert CIFAR-10 into FFCV files: train.beton, test.beton and meta.json "
                    "(plus the raw arrays <split>_images.npy / <split>_labels.npy).",
    )
    parser.add_argument("--out", type=Path, default=Path("data/cifar10"),
                        help="output directory (default: data/cifar10)")
    parser.add_argument("--source", type=Path, default=None,
                        help="local copy instead of downloading: cifar-10-python.tar.gz, a "
                             "directory holding (or being) cifar-10-batches-py/, or a directory "
                             "with train/<class>/*.png|jpg and test/<class>/* image folders")
    parser.add_argument("--allow-unofficial", action="store_true",
                        help="accept pickle batches whose md5 differs from the official release "
                             "(prints a warning; structure is still checked)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing, non-empty --out directory")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the download is kept (default: <parent of --out>/downloads)")
    parser.add_argument("--url", default=OFFICIAL_URL,
                        help="download URL, e.g. a mirror of the official archive; its md5 must "
                             "still match (default: the official Toronto URL)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for decoding image folders (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--synthetic", type=int, default=None, metavar="N",
                        help="write a seeded synthetic CIFAR-10-shaped set instead (N train + N/5 "
                             "test images; the class is the colour of a noisy disc): for "
                             "benchmarks and smoke runs, not for accuracy. Without FFCV it "
                             "writes the arrays only (no betons)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of --synthetic (default: 0)")
    return parser


# --- the download ------------------------------------------------------------------------------

def download_archive(url: str, cache_dir: Path, console: Console, quiet: bool) -> Path:
    """Fetch the official archive into `cache_dir` (reused when present) and check its md5."""
    target = cache_dir / cifar_pickle.ARCHIVE_NAME
    if target.is_file():
        if cifar_pickle.md5_hex(target.read_bytes()) == cifar_pickle.ARCHIVE_MD5:
            return target
        console.print(f"cached archive has the wrong md5, downloading again: {target}")
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
            # Create the cache only once the server answered: a failed attempt leaves nothing.
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
                fh = open(partial, "wb")
            except OSError as err:
                raise UserError(f"cannot write download cache ({err.strerror}): {cache_dir}") from None
            total = int(response.headers.get("Content-Length") or 0) or None
            with download_progress(console, disable=quiet) as bar:
                task = bar.add_task("download", total=total)
                with fh:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        fh.write(block)
                        digest.update(block)
                        bar.advance(task, len(block))
    except UserError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise UserError(f"cannot download {url}: {reason}; {SOURCE_HINT}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != cifar_pickle.ARCHIVE_MD5:
        partial.unlink(missing_ok=True)
        raise UserError(f"downloaded archive has md5 {digest.hexdigest()}, expected "
                        f"{cifar_pickle.ARCHIVE_MD5} (corrupt download?): {url}")
    partial.replace(target)
    return target


# --- reading a source --------------------------------------------------------------------------

def read_source(args: argparse.Namespace, console: Console, progress: Progress) -> Cifar10Source:
    """Detect what --source is (or download) and read both splits into memory, fully checked."""
    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {message}", soft_wrap=True, highlight=False)

    track = task_starter(progress)
    if args.source is None:
        cache = args.cache_dir or args.out.parent / "downloads"
        archive = download_archive(args.url, cache, console, args.quiet)
        return cifar_pickle.read_tarball(
            archive, allow_unofficial=args.allow_unofficial, warn=warn,
            advance=track("reading batches", len(cifar_pickle.FILE_MD5)), kind="download")

    source: Path = args.source
    if not source.exists():
        raise UserError(f"source not found: {source}")
    if source.is_file():
        if not source.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise UserError(f"unsupported source file (expected {cifar_pickle.ARCHIVE_NAME}): {source}")
        return cifar_pickle.read_tarball(
            source, allow_unofficial=args.allow_unofficial, warn=warn,
            advance=track("reading batches", len(cifar_pickle.FILE_MD5)))
    if not source.is_dir():
        raise UserError(f"source is neither a file nor a directory: {source}")
    for batches in (source / cifar_pickle.BATCH_DIR, source):
        if (batches / cifar_pickle.META_BATCH).exists() or (batches / "data_batch_1").exists():
            return cifar_pickle.read_batches_dir(
                batches, allow_unofficial=args.allow_unofficial, warn=warn,
                advance=track("reading batches", len(cifar_pickle.FILE_MD5)))
    if image_folder.looks_like_image_folder(source):
        return image_folder.read_image_folder(source, workers=args.workers, progress=track)
    raise UserError(f"unrecognised source directory (expected {cifar_pickle.BATCH_DIR}/, its batch "
                    f"files, or train/ and test/ class folders): {source}")


# --- the synthetic set ------------------------------------------------------------------------

SYNTHETIC_MIN, SYNTHETIC_MAX = 50, 1_000_000  # 50: the test split (N/5) has every class
# One well-separated colour per class: a model learns "which colour is the disc" in an epoch.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [250, 190, 190], [0, 0, 128]],
                   dtype=np.int16)


def synthetic_split(n: int, rng: np.random.Generator, chunk: int = 5000) -> SplitArrays:
    """n images: grey noise background, one disc of the class colour (noisy) at a random place."""
    labels = rng.permutation(np.arange(n) % len(CIFAR10_CLASSES)).astype(np.int64)  # balanced
    images = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    for start in range(0, n, chunk):  # int16 temporaries of one chunk, not of the whole split
        b = min(chunk, n - start)
        radius = rng.integers(5, 11, size=(b, 1, 1))
        cy, cx = (rng.integers(radius[:, 0, 0], 32 - radius[:, 0, 0])[:, None, None] for _ in range(2))
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)[..., None]
        background = rng.integers(40, 216, size=(b, 32, 32, 1), dtype=np.int16)
        noise = rng.integers(-40, 41, size=(b, 32, 32, 3), dtype=np.int16)
        colour = PALETTE[labels[start : start + b]][:, None, None, :]
        images[start : start + b] = np.clip(np.where(disc, colour, background) + noise, 0, 255)
    return SplitArrays(images, labels)


def synthetic_source(n: int, seed: int) -> Cifar10Source:
    """A seeded CIFAR-10-shaped source: n train and n // 5 test images (same seed: same bytes)."""
    if not SYNTHETIC_MIN <= n <= SYNTHETIC_MAX:
        raise UserError(f"--synthetic must be between {SYNTHETIC_MIN} and {SYNTHETIC_MAX}: {n}")
    rng = np.random.default_rng([seed, n])
    train, test = synthetic_split(n, rng), synthetic_split(n // 5, rng)
    note = (f"{SYNTHETIC_LABEL}: {n} train + {n // 5} test seeded images (seed {seed}), the class "
            "being the colour of a noisy disc; written by data_prep.py --synthetic")
    return Cifar10Source(train, test, SourceInfo(kind="synthetic", path=f"synthetic:{n}:seed={seed}",
                                                 md5_verified=False, note=note))


def ffcv_importable() -> bool:
    """Whether FFCV can be imported here (it needs system OpenCV and libjpeg-turbo)."""
    try:
        importlib.import_module("ddpcifar.data.ffcv_import")
    except (ImportError, OSError):  # absent, or its compiled part cannot load its libraries
        return False
    return True


# --- the output directory ----------------------------------------------------------------------

def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_out(out: Path, force: bool) -> None:
    """Refuse to overwrite existing content unless --force, before any work is done.

    Also catches an --out that can never be created (an ancestor is a file) up front, rather
    than after a minute of decoding.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out exists and is not a directory: {out}")
    if _is_nonempty_dir(out) and not force:
        raise UserError(f"output directory exists and is not empty (use --force to replace it): {out}")
    existing = next(p for p in [out.parent, *out.parent.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot create output directory ({existing} is not a directory): {out}")


def check_free_space(directory: Path, counts: Sequence[int]) -> None:
    """Refuse early when the betons cannot fit.

    A full disk inside FFCV's writer process would otherwise leave the parent waiting forever.
    """
    # 3072 raw pixel bytes + ~40 bytes of field metadata per image, plus one 8 MiB page of
    # slack per file; the raw arrays again 3072 + 8 bytes per image.
    needed = sum(n * (3072 + 64) + (8 << 20) + n * (3072 + 8) for n in counts)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UserError(f"not enough free space (need ~{needed >> 20} MiB, have {free >> 20} MiB): "
                        f"{directory}")


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh directory beside `out` (same filesystem, so the final rename is atomic).

    Removed on any failure, together with parent directories this call created.
    """
    created: list[Path] = []
    parent = out.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            break
        created.append(ancestor)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as err:
        raise UserError(f"cannot create output directory ({err.strerror}): {out}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in created:  # innermost first; only ones still empty
            try:
                path.rmdir()
            except OSError:
                break
        raise


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def publish(staging: Path, out: Path, force: bool) -> None:
    """Move the finished `staging` directory to `out`, replacing old content only with --force."""
    check_out(out, force)  # again: something may have appeared while we worked
    old = None
    if out.exists():  # an empty directory, or --force
        old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    try:
        staging.rename(out)
    except OSError as err:
        if old is not None:
            old.rename(out)
        raise UserError(f"cannot move the result into place ({err.strerror}): {out}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- the conversion ----------------------------------------------------------------------------

def convert(args: argparse.Namespace, console: Console) -> DataMeta:
    """Read the source, check it, write both betons, the arrays and meta.json, publish to --out."""
    out: Path = args.out
    check_out(out, args.force)
    with steps_progress(console, disable=args.quiet) as progress:
        if args.synthetic is not None:
            source = synthetic_source(args.synthetic, args.seed)
        else:
            source = read_source(args, console, progress)
        # FFCV pulls in torch and numba (seconds of CPU): import it only once the input has
        # passed every check, so --help and input errors answer at once.
        betons = ffcv_importable()
        if not betons and args.synthetic is None:
            raise UserError("FFCV is not importable, so the betons cannot be written (only "
                            f"--synthetic may do without them): {out}")
        from ddpcifar.data.beton import beton_path, write_split

        track = task_starter(progress)
        mean, std = channel_stats(source.train.images,
                                  track("computing mean/std", len(source.train.images)))
        with staging_dir(out) as staging:
            check_free_space(staging, [len(getattr(source, s).labels) for s in SPLITS])
            if not betons:
                console.print("FFCV not importable: wrote the raw arrays only, no betons (the "
                              "memory loader reads them; the ffcv loader cannot)",
                              soft_wrap=True, highlight=False)
            written: list[Path] = []
            for split in SPLITS:
                arrays = getattr(source, split)
                if betons:
                    write_split(beton_path(staging, split), arrays,
                                track(f"writing {split}.beton", len(arrays.labels)))
                    written.append(beton_path(staging, split))
                write_arrays(staging, split, arrays)  # the memory loader's input, no FFCV needed
                written += [staging / name for name in array_names(split)]
            meta = DataMeta(
                format=META_FORMAT,
                classes=CIFAR10_CLASSES,
                counts={s: len(getattr(source, s).labels) for s in SPLITS},
                class_counts={s: class_counts(getattr(source, s).labels) for s in SPLITS},
                mean=mean,
                std=std,
                image_shape=IMAGE_SHAPE,
                source=source.source,
                sha256={path.name: sha256_file(path) for path in written},
            )
            write_json(staging / META_FILE, meta.model_dump(mode="json"))
            for path in written:  # durable before the rename makes them visible
                _fsync(path)
            publish(staging, out, args.force)
    return meta


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of data_prep.py / ddpcifar-prep. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1: {args.workers}")
    if args.synthetic is not None and args.source is not None:
        raise UserError(f"--synthetic and --source exclude each other: {args.source}")
    console = Console(file=sys.stderr)  # bound now: beton.write_split redirects sys.stderr
    meta = convert(args, console)
    if meta.source.kind == "synthetic":  # on stdout, even with --quiet: nobody mistakes it
        print(f"{SYNTHETIC_LABEL}: wrote {meta.counts.train} train + {meta.counts.test} test "
              f"synthetic images to {args.out}")
    elif not args.quiet:
        console.print(
            f"wrote {meta.counts.train} train + {meta.counts.test} test images to {args.out} "
            f"(source: {meta.source.kind}, md5 verified: {meta.source.md5_verified})",
            soft_wrap=True, highlight=False,
        )
    return 0
