"""Build small CIFAR-10 sources inside a test run, in exactly the formats users have.

`make_cifar_tarball` writes cifar-10-python.tar.gz the way the official one is made: Python 2
cPickle protocol 2 (str objects as BINSTRING opcodes, so they load as bytes with
encoding="bytes"), numpy arrays reduced through numpy.core.multiarray._reconstruct.
Python 3's own pickler cannot produce that (it pickles bytes via _codecs.encode), so
`py2_pickle_dumps` emits the opcodes directly.
`make_image_folder` writes lossless PNGs so decoded pixels can be compared exactly.
"""

from __future__ import annotations

import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Expected:
    """What a fixture wrote, in file order: uint8 (N,32,32,3) HWC images, int64 labels."""

    images: np.ndarray
    labels: np.ndarray


# --- a Python-2-style protocol 2 pickle writer (only the types a CIFAR batch holds) -----------

def _pickle_str(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(value)) + value  # BINSTRING


def _pickle_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _pickle_tuple(items: list[bytes]) -> bytes:
    ops = {1: b"\x85", 2: b"\x86", 3: b"\x87"}  # TUPLE1..3
    if len(items) in ops:
        return b"".join(items) + ops[len(items)]
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _pickle_uint8_array(array: np.ndarray) -> bytes:
    """numpy 1.x's reduction: _reconstruct(ndarray, (0,), 'b') then BUILD with the state."""
    assert array.dtype == np.uint8
    dtype = (b"cnumpy\ndtype\n" + _pickle_tuple([_pickle_str(b"u1"), _pickle_int(0), _pickle_int(1)])
             + b"R" + _pickle_tuple([_pickle_int(3), _pickle_str(b"|"), b"N", b"N", b"N",
                                     b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", _pickle_int(0)])
             + b"b")
    state = _pickle_tuple([_pickle_int(1), _pickle_tuple([_pickle_int(d) for d in array.shape]),
                           dtype, b"\x89", _pickle_str(np.ascontiguousarray(array).tobytes())])
    return (b"cnumpy.core.multiarray\n_reconstruct\n"
            + _pickle_tuple([b"cnumpy\nndarray\n", _pickle_tuple([_pickle_int(0)]), _pickle_str(b"b")])
            + b"R" + state + b"b")


def _pickle_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return _pickle_str(value)
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return _pickle_int(value)
    if isinstance(value, list):
        return b"](" + b"".join(_pickle_value(v) for v in value) + b"e"  # EMPTY_LIST MARK APPENDS
    if isinstance(value, np.ndarray):
        return _pickle_uint8_array(value)
    raise TypeError(f"cannot pickle {type(value).__name__} like a CIFAR batch")


def py2_pickle_dumps(obj: dict[bytes, object]) -> bytes:
    """Pickle a dict of bytes keys as Python 2's cPickle.dump(obj, f, 2) would (minus memo ops)."""
    body = b"".join(_pickle_str(k) + _pickle_value(v) for k, v in obj.items())
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


# --- fixtures ----------------------------------------------------------------------------------

def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels covering all 10 classes (for n >= 10) in a shuffled order."""
    return rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)


def make_batches(n_train_per_batch: int = 100, n_test: int = 100,
                 seed: int = 0) -> tuple[dict[str, bytes], Expected, Expected]:
    """The seven files of cifar-10-batches-py/ as bytes, plus the expected train/test arrays."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    expected = {}
    batches = [(f"data_batch_{i}", n_train_per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    batches.append(("test_batch", n_test, "testing batch 1 of 1"))
    for name, n, batch_label in batches:
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = _balanced_labels(rng, n)
        # Official layout: each row is the R plane, then G, then B, each row-major (CHW).
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        files[name] = py2_pickle_dumps({
            b"batch_label": batch_label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"{CLASSES[v]}_s_{i:06d}.png".encode() for i, v in enumerate(labels)],
        })
        expected[name] = Expected(images, labels)
    files["batches.meta"] = py2_pickle_dumps({
        b"num_cases_per_batch": n_train_per_batch,
        b"label_names": [c.encode() for c in CLASSES],
        b"num_vis": 3072,
    })
    train = Expected(np.concatenate([expected[f"data_batch_{i}"].images for i in range(1, 6)]),
                     np.concatenate([expected[f"data_batch_{i}"].labels for i in range(1, 6)]))
    return files, train, expected["test_batch"]


def write_batches_dir(directory: Path, files: dict[str, bytes]) -> Path:
    """Write the batch files into `directory` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def make_cifar_batches_dir(tmp_path: Path, n_train_per_batch: int = 100, n_test: int = 100,
                           seed: int = 0) -> tuple[Path, Expected, Expected]:
    """An extracted `<tmp_path>/cifar-10-batches-py/`; returns (that dir, train, test)."""
    files, train, test = make_batches(n_train_per_batch, n_test, seed)
    return write_batches_dir(tmp_path / "cifar-10-batches-py", files), train, test


def make_cifar_tarball(tmp_path: Path, n_train_per_batch: int = 100, n_test: int = 100,
                       seed: int = 0, files: dict[str, bytes] | None = None
                       ) -> tuple[Path, Expected, Expected]:
    """`<tmp_path>/cifar-10-python.tar.gz` in the official layout; returns (path, train, test).

    `files` overrides the batch contents (for corrupt-input tests); the expected arrays still
    describe the generated, well-formed batches.
    """
    generated, train, test = make_batches(n_train_per_batch, n_test, seed)
    files = generated if files is None else files
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        dir_info = tarfile.TarInfo("cifar-10-batches-py")
        dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(dir_info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path, train, test


def make_image_folder(tmp_path: Path, n_train_per_class: int = 10, n_test_per_class: int = 3,
                      seed: int = 0, name: str = "images") -> tuple[Path, Expected, Expected]:
    """`<tmp_path>/<name>/{train,test}/<class>/NNNN.png`; returns (root, train, test).

    Expected arrays are in the order the converter must produce: class by class (sorted
    folder names), files by sorted name.
    """
    rng = np.random.default_rng(seed)
    root = tmp_path / name
    expected = {}
    for split, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        images = rng.integers(0, 256, size=(10 * per_class, 32, 32, 3), dtype=np.uint8)
        labels = np.repeat(np.arange(10, dtype=np.int64), per_class)
        for index, (image, label) in enumerate(zip(images, labels)):
            class_dir = root / split / CLASSES[label]
            class_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(class_dir / f"{index % per_class:04d}.png")
        expected[split] = Expected(images, labels)
    return root, expected["train"], expected["test"]
