"""Read the official CIFAR-10 python release (pickled batches) safely.

The batches are Python 2 pickles, so loading them means running a pickle: a file from
anywhere could otherwise execute code. `SafeUnpickler` admits only the three numpy globals
the real files reference, and everything read is checked for the CIFAR-10 structure.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy._core.multiarray import _reconstruct  # what numpy.core.multiarray._reconstruct became

from ddpcifar.data.meta import CIFAR10_CLASSES, Cifar10Source, SourceInfo, SourceKind, SplitArrays
from ddpcifar.errors import UserError

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_BATCH = "batches.meta"
# Official md5 of each member of cifar-10-batches-py/.
FILE_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
MAX_MEMBER_BYTES = 256 << 20  # an official batch is ~31 MB; refuse to buffer absurd members

# The only globals a CIFAR-10 batch needs: numpy array and dtype reconstruction. The originals
# (pickled by numpy 1.x) name numpy.core.*; numpy 2 pickles name numpy._core.*.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

Warn = Callable[[str], None]


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can build numpy arrays and plain containers, and nothing else."""

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        # encoding="bytes": Python 2 str objects (keys, names, pixel buffers) load as bytes.
        super().__init__(file, encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"refusing to unpickle {module}.{name} (not part of a CIFAR-10 batch): {self.where}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(f"refusing pickle with persistent ids: {self.where}")


def unpickle(data: bytes, where: str) -> Any:
    """Load one pickle with SafeUnpickler; corrupt, truncated or padded data is a UserError."""
    stream = io.BytesIO(data)
    try:
        obj = SafeUnpickler(stream, where).load()
    except UserError:
        raise
    except Exception as err:  # the C unpickler raises many types on garbage input
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"corrupt or truncated pickle ({reason}): {where}") from None
    if stream.read(1):
        raise UserError(f"unexpected bytes after the pickle (corrupt file?): {where}")
    return obj


def _require_dict(obj: Any, keys: tuple[bytes, ...], where: str) -> dict:
    if not isinstance(obj, dict):
        raise UserError(f"not a CIFAR-10 batch (a {type(obj).__name__}, expected a dict): {where}")
    missing = [k.decode() for k in keys if k not in obj]
    if missing:
        raise UserError(f"not a CIFAR-10 batch (missing {', '.join(missing)}): {where}")
    return obj


def parse_batch(data: bytes, where: str) -> SplitArrays:
    """Parse a data_batch_N / test_batch pickle into HWC images and labels, checking its shape."""
    batch = _require_dict(unpickle(data, where), (b"data", b"labels"), where)
    pixels = batch[b"data"]
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == 3 * 32 * 32 and len(pixels) > 0):
        desc = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise UserError(f"batch 'data' must be a non-empty uint8 (N, 3072) array, got {desc}: {where}")
    raw_labels = batch[b"labels"]
    if not isinstance(raw_labels, (list, np.ndarray)) or len(raw_labels) != len(pixels):
        got = len(raw_labels) if isinstance(raw_labels, (list, np.ndarray)) else type(raw_labels).__name__
        raise UserError(f"batch 'labels' must be a list of {len(pixels)} class ids, got {got}: {where}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw_labels):
        raise UserError(f"batch 'labels' must be integers: {where}")
    labels = np.asarray(raw_labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
        raise UserError(f"batch labels outside 0..9 (min {labels.min()}, max {labels.max()}): {where}")
    # Each row is 1024 R, then 1024 G, then 1024 B values, each plane row-major (CHW).
    images = np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return SplitArrays(images=images, labels=labels)


def parse_meta_batch(data: bytes, where: str) -> tuple[str, ...]:
    """Parse batches.meta and check it names the CIFAR-10 classes in the official order."""
    meta = _require_dict(unpickle(data, where), (b"label_names",), where)
    names = meta[b"label_names"]
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise UserError(f"batches.meta 'label_names' must be a list of names: {where}")
    decoded = tuple(n.decode("ascii", errors="replace") for n in names)
    if decoded != CIFAR10_CLASSES:
        raise UserError(f"batches.meta does not list the CIFAR-10 classes ({', '.join(decoded)}): {where}")
    return decoded


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _check_md5s(files: dict[str, bytes], where: Callable[[str], str],
                allow_unofficial: bool, warn: Warn) -> bool:
    """True when every file matches its official md5; otherwise refuse, or warn if allowed."""
    bad = [(name, md5_hex(data)) for name, data in files.items() if md5_hex(data) != FILE_MD5[name]]
    if not bad:
        return True
    name, actual = bad[0]
    if not allow_unofficial:
        raise UserError(f"md5 mismatch (got {actual}, official {FILE_MD5[name]}): {where(name)}; "
                        "pass --allow-unofficial to accept a non-official copy")
    names = ", ".join(n for n, _ in bad)
    warn(f"{len(bad)} of {len(files)} files differ from the official md5 sums ({names}) in "
         f"{where('').rstrip('/')}; accepted because of --allow-unofficial")
    return False


def _assemble(files: dict[str, bytes], where: Callable[[str], str]) -> tuple[SplitArrays, SplitArrays]:
    parse_meta_batch(files[META_BATCH], where(META_BATCH))
    parts = [parse_batch(files[name], where(name)) for name in TRAIN_BATCHES]
    train = SplitArrays(images=np.concatenate([p.images for p in parts]),
                        labels=np.concatenate([p.labels for p in parts]))
    return train, parse_batch(files[TEST_BATCH], where(TEST_BATCH))


def read_batches_dir(directory: Path, *, allow_unofficial: bool, warn: Warn,
                     advance: Callable[[int], None] | None = None) -> Cifar10Source:
    """Read an extracted `cifar-10-batches-py/` directory."""
    files: dict[str, bytes] = {}
    for name in FILE_MD5:
        path = directory / name
        if not path.is_file():
            raise UserError(f"missing CIFAR-10 batch file: {path}")
        files[name] = path.read_bytes()
        if advance is not None:
            advance(1)
    verified = _check_md5s(files, lambda n: str(directory / n), allow_unofficial, warn)
    train, test = _assemble(files, lambda n: str(directory / n))
    note = ("official per-file md5 sums verified" if verified
            else "NOT the official files (md5 mismatch accepted with --allow-unofficial)")
    return Cifar10Source(train, test, SourceInfo(kind="pickle-dir", path=str(directory.resolve()),
                                                 md5_verified=verified, note=note))


def read_tarball(archive: Path, *, allow_unofficial: bool, warn: Warn,
                 advance: Callable[[int], None] | None = None,
                 kind: SourceKind = "pickle-tar") -> Cifar10Source:
    """Read cifar-10-python.tar.gz in memory (nothing is extracted to disk).

    Accepted when the archive's md5 is the official one, or when every batch inside matches
    its official md5 (a re-compressed copy of the same files); otherwise only with
    --allow-unofficial.
    """
    archive_md5 = hashlib.md5(usedforsecurity=False)
    try:
        with open(archive, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                archive_md5.update(block)
    except OSError as err:
        raise UserError(f"cannot read archive ({err.strerror}): {archive}") from None
    archive_ok = archive_md5.hexdigest() == ARCHIVE_MD5

    def where(name: str) -> str:
        return f"{archive}:{BATCH_DIR}/{name}"

    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                top, _, name = member.name.partition("/")
                if top != BATCH_DIR or name not in FILE_MD5 or name in files:
                    continue
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise UserError(f"not a regular batch file of sane size: {where(name)}")
                extracted = tar.extractfile(member)
                assert extracted is not None  # isfile() above
                files[name] = extracted.read()
                if advance is not None:
                    advance(1)
    except UserError:
        raise
    except (tarfile.TarError, EOFError, OSError) as err:
        reason = " ".join(str(err).split())  # tarfile's messages span several lines
        raise UserError(f"not a readable tar.gz archive ({reason}): {archive}") from None
    missing = [n for n in FILE_MD5 if n not in files]
    if missing:
        raise UserError(f"archive lacks {BATCH_DIR}/{missing[0]}: {archive}")

    if archive_ok:
        verified, note = True, "official archive md5 verified"
    else:
        verified = all(md5_hex(data) == FILE_MD5[name] for name, data in files.items())
        if verified:
            note = "archive md5 differs but every batch matches its official md5"
        else:
            if not allow_unofficial:
                # Name the archive's own checksum first: it is what the user can compare.
                raise UserError(
                    f"md5 mismatch (got {archive_md5.hexdigest()}, official {ARCHIVE_MD5}): "
                    f"{archive}; pass --allow-unofficial to accept a non-official copy"
                )
            _check_md5s(files, where, allow_unofficial, warn)
            note = "NOT the official files (md5 mismatch accepted with --allow-unofficial)"
    train, test = _assemble(files, where)
    info = SourceInfo(kind=kind, path=str(archive.resolve()), md5_verified=verified, note=note)
    return Cifar10Source(train, test, info)
