"""data_prep.py end to end on small fixtures: round trips through FFCV, meta.json, bad input.

Most cases call `main([...])` in-process (fast); a few run the real script as a subprocess to
prove the exit status and that no traceback reaches the user.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from ffcv.fields import IntField, RGBImageField
from ffcv.reader import Reader
from PIL import Image

from cifar_fixtures import (CLASSES, Expected, make_batches, make_cifar_batches_dir,
                            make_cifar_tarball, make_image_folder, write_batches_dir)
from ddpcifar.data import cifar_pickle, image_folder as image_folder_mod
from ddpcifar.data.beton import beton_fields, read_split
from ddpcifar.data.meta import CIFAR10_CLASSES, load_meta
from ddpcifar.data.prepare import main
from ddpcifar.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PREPARED = sorted(["meta.json", "test.beton", "train.beton", "test_images.npy", "test_labels.npy",
                   "train_images.npy", "train_labels.npy"])
# Run a snippet where `import ffcv` fails, as on a machine without FFCV installed.
NO_FFCV = "import sys; sys.modules['ffcv'] = None; "


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(source: Path | None, out: Path, *extra: str) -> int:
    args = ["--out", str(out), "--quiet", *extra]
    if source is not None:
        args += ["--source", str(source)]
    return main(args)


def assert_refused(capsys: pytest.CaptureFixture, source: Path | None, out: Path,
                   *fragments: str, extra: tuple[str, ...] = ("--allow-unofficial",)) -> str:
    """Run the converter, expect exit 2 with one error line containing `fragments`.

    Also checks the promise about --out: it was not created, and no staging directory was
    left beside it.
    """
    capsys.readouterr()
    status = convert(source, out, *extra)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    return lines[0]


def check_converted(out: Path, train: Expected, test: Expected) -> None:
    """Pixel-exact round trip through FFCV's Loader, plus every number in meta.json."""
    for split, expected in (("train", train), ("test", test)):
        images, labels = read_split(out, split)
        assert images.dtype == np.uint8 and images.shape == expected.images.shape
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expected.images)
        np.testing.assert_array_equal(labels, expected.labels)
    raw = json.loads((out / "meta.json").read_text())
    assert raw["format"] == 1
    assert raw["classes"] == list(CLASSES)
    assert raw["counts"] == {"train": len(train.labels), "test": len(test.labels)}
    assert raw["class_counts"] == {"train": np.bincount(train.labels, minlength=10).tolist(),
                                   "test": np.bincount(test.labels, minlength=10).tolist()}
    pixels = train.images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(raw["mean"], pixels.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(raw["std"], pixels.std(axis=0), rtol=0, atol=1e-8)
    assert raw["image_shape"] == [32, 32, 3]
    assert raw["sha256"] == {name: sha256(out / name) for name in PREPARED if name != "meta.json"}
    meta = load_meta(out, verify_sha256=True)
    assert meta.classes == CIFAR10_CLASSES
    assert sorted(p.name for p in out.iterdir()) == PREPARED
    for split, expected in (("train", train), ("test", test)):  # the raw arrays hold the same pixels
        np.testing.assert_array_equal(np.load(out / f"{split}_images.npy"), expected.images)
        np.testing.assert_array_equal(np.load(out / f"{split}_labels.npy"), expected.labels)


# --- round trips -------------------------------------------------------------------------------

def test_tarball_round_trip(cifar_tarball, tmp_path: Path) -> None:
    tarball, train, test = cifar_tarball
    out = tmp_path / "out"
    assert convert(tarball, out, "--allow-unofficial") == 0
    check_converted(out, train, test)
    source = load_meta(out).source
    assert (source.kind, source.md5_verified) == ("pickle-tar", False)
    assert source.path == str(tarball.resolve())


@pytest.mark.parametrize("point_at", ["parent", "batches-dir"])
def test_batches_dir_round_trip(tmp_path: Path, point_at: str) -> None:
    batches, train, test = make_cifar_batches_dir(tmp_path, n_train_per_batch=12, n_test=15, seed=3)
    source = batches.parent if point_at == "parent" else batches
    out = tmp_path / "out"
    assert convert(source, out, "--allow-unofficial") == 0
    check_converted(out, train, test)
    assert load_meta(out).source.kind == "pickle-dir"


def test_image_folder_round_trip(image_folder, tmp_path: Path) -> None:
    root, train, test = image_folder
    out = tmp_path / "out"
    assert convert(root, out) == 0  # image folders need no --allow-unofficial
    check_converted(out, train, test)
    assert load_meta(out).source.kind == "image-folder"


def test_image_folder_accepts_grey_and_palette_and_jpeg(tmp_path: Path) -> None:
    root, train, test = make_image_folder(tmp_path, n_train_per_class=2, n_test_per_class=1)
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(grey).save(root / "train" / "cat" / "0000.png")  # mode L
    Image.fromarray(grey).convert("P").save(root / "train" / "dog" / "0001.png")  # mode P
    Image.fromarray(test.images[0]).save(root / "test" / "airplane" / "0000.jpg", quality=95)
    (root / "test" / "airplane" / "0000.png").unlink()
    out = tmp_path / "out"
    assert convert(root, out) == 0
    images, _ = read_split(out, "train")
    cat0 = 3 * 2  # class 3, first file
    np.testing.assert_array_equal(images[cat0], np.repeat(grey[:, :, None], 3, axis=2))
    dog1 = 5 * 2 + 1
    palette_rgb = np.asarray(Image.fromarray(grey).convert("P").convert("RGB"))
    np.testing.assert_array_equal(images[dog1], palette_rgb)
    test_images, _ = read_split(out, "test")
    # JPEG is lossy: close to what was saved, decoded exactly as Pillow decodes it.
    expected_jpeg = np.asarray(Image.open(root / "test" / "airplane" / "0000.jpg").convert("RGB"))
    np.testing.assert_array_equal(test_images[0], expected_jpeg)


def test_rerun_is_byte_identical(cifar_tarball, tmp_path: Path) -> None:
    tarball, _, _ = cifar_tarball
    first, second = tmp_path / "first", tmp_path / "second"
    assert convert(tarball, first, "--allow-unofficial") == 0
    assert convert(tarball, second, "--allow-unofficial") == 0
    for name in PREPARED:
        assert sha256(first / name) == sha256(second / name), name
    # --force over an existing conversion gives the same bytes again.
    assert convert(tarball, first, "--allow-unofficial", "--force") == 0
    assert sha256(first / "train.beton") == sha256(second / "train.beton")


def test_beton_schema(prepared_data) -> None:
    assert list(beton_fields()) == ["image", "label"]
    reader = Reader(str(prepared_data.data_dir / "train.beton"))
    assert list(reader.field_names) == ["image", "label"]
    assert [type(h) for h in reader.handlers.values()] == [RGBImageField, IntField]
    modes = set(reader.metadata["f0"]["mode"].tolist())
    assert modes == {1}  # IMAGE_MODES["raw"]: stored uncompressed


def test_prepared_data_fixture(prepared_data) -> None:
    data_dir, train, test = prepared_data
    assert (len(train.labels), len(test.labels)) == (1000, 200)
    check_converted(data_dir, train, test)


def test_official_checksums_are_verified(tmp_path: Path, monkeypatch) -> None:
    """With the official md5 table pointed at the fixture, the source counts as verified."""
    files, train, test = make_batches(8, 8, seed=4)
    monkeypatch.setattr(cifar_pickle, "FILE_MD5",
                        {name: cifar_pickle.md5_hex(data) for name, data in files.items()})
    batches = write_batches_dir(tmp_path / "cifar-10-batches-py", files)
    out = tmp_path / "out"
    assert convert(batches, out) == 0  # no --allow-unofficial needed
    assert load_meta(out).source.md5_verified is True
    tarball, _, _ = make_cifar_tarball(tmp_path, 8, 8, seed=4)
    assert convert(tarball, tmp_path / "out2") == 0  # archive md5 differs, members match
    assert load_meta(tmp_path / "out2").source.md5_verified is True


# --- the restricted unpickler ------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UserError, match=r"refusing to unpickle (posix|os)\.system"):
        cifar_pickle.unpickle(pickle.dumps({b"data": _Evil(marker)}, protocol=4), "evil")
    assert not marker.exists()
    payload = pickle.dumps(_Evil(marker), protocol=2)
    # Sanity check of the test itself: the stock unpickler would have run the command.
    pickle.loads(payload)
    assert marker.exists()


def test_numpy2_pickles_also_load() -> None:
    """A batch re-pickled by Python 3 / numpy 2 (protocol 4) names numpy._core: accepted."""
    data = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    batch = cifar_pickle.parse_batch(pickle.dumps({b"data": data, b"labels": [1, 9]}, protocol=4), "x")
    np.testing.assert_array_equal(batch.images[1, 0, 0], data[1, [0, 1024, 2048]])
    np.testing.assert_array_equal(batch.labels, [1, 9])


# --- bad input: every case leaves --out absent -------------------------------------------------

def test_missing_source(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.tar.gz"
    assert_refused(capsys, missing, tmp_path / "out", "source not found", str(missing))


def test_tarball_md5_mismatch(cifar_tarball, tmp_path: Path, capsys) -> None:
    tarball, _, _ = cifar_tarball
    assert_refused(capsys, tarball, tmp_path / "out", "md5 mismatch", str(tarball),
                   "--allow-unofficial", extra=())


def test_batch_md5_mismatch(tmp_path: Path, capsys) -> None:
    batches, _, _ = make_cifar_batches_dir(tmp_path, 5, 5)
    assert_refused(capsys, batches, tmp_path / "out", "md5 mismatch",
                   str(batches / "data_batch_1"), extra=())


def _batches_with(tmp_path: Path, name: str, data: bytes) -> Path:
    files, _, _ = make_batches(5, 5)
    files[name] = data
    return write_batches_dir(tmp_path / "cifar-10-batches-py", files)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_batch(tmp_path: Path, capsys, cut: float) -> None:
    files, _, _ = make_batches(5, 5)
    data = files["data_batch_3"]
    batches = _batches_with(tmp_path, "data_batch_3", data[: int(len(data) * cut)])
    assert_refused(capsys, batches, tmp_path / "out", "truncated", str(batches / "data_batch_3"))


def test_truncated_batch_in_tarball(tmp_path: Path, capsys) -> None:
    files, _, _ = make_batches(5, 5)
    files["test_batch"] = files["test_batch"][:-40]
    tarball, _, _ = make_cifar_tarball(tmp_path, 5, 5, files=files)
    assert_refused(capsys, tarball, tmp_path / "out", "truncated",
                   f"{tarball}:cifar-10-batches-py/test_batch")


def test_garbage_batch(tmp_path: Path, capsys) -> None:
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    batches = _batches_with(tmp_path, "data_batch_2", garbage)
    assert_refused(capsys, batches, tmp_path / "out", "corrupt", str(batches / "data_batch_2"))


def test_garbage_archive(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"not really gzip" * 100)
    assert_refused(capsys, archive, tmp_path / "out", "not a readable tar.gz", str(archive))


@pytest.mark.parametrize("obj, fragment", [
    ({b"pixels": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, "missing data"),
    ([1, 2, 3], "a list, expected a dict"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "list of 2 class ids"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "(N, 3072)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
])
def test_pickle_that_is_not_a_batch(tmp_path: Path, capsys, obj, fragment: str) -> None:
    batches = _batches_with(tmp_path, "data_batch_1", pickle.dumps(obj, protocol=4))
    assert_refused(capsys, batches, tmp_path / "out", fragment, str(batches / "data_batch_1"))


def test_wrong_label_names(tmp_path: Path, capsys) -> None:
    from cifar_fixtures import py2_pickle_dumps
    meta = py2_pickle_dumps({b"label_names": [c.encode() for c in reversed(CLASSES)]})
    batches = _batches_with(tmp_path, "batches.meta", meta)
    assert_refused(capsys, batches, tmp_path / "out", "does not list the CIFAR-10 classes")


def test_malicious_batch_file(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    batches = _batches_with(tmp_path, "data_batch_1", pickle.dumps(_Evil(marker), protocol=2))
    assert_refused(capsys, batches, tmp_path / "out", "refusing to unpickle",
                   str(batches / "data_batch_1"))
    assert not marker.exists()


def test_missing_batch_file(tmp_path: Path, capsys) -> None:
    batches, _, _ = make_cifar_batches_dir(tmp_path, 5, 5)
    (batches / "data_batch_4").unlink()
    assert_refused(capsys, batches, tmp_path / "out", "missing CIFAR-10 batch file",
                   str(batches / "data_batch_4"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root, _, _ = make_image_folder(tmp_path, n_train_per_class=2, n_test_per_class=1)
    return root


def test_image_of_wrong_size(folder: Path, tmp_path: Path, capsys) -> None:
    bad = folder / "train" / "frog" / "0001.png"
    Image.new("RGB", (32, 31)).save(bad)
    assert_refused(capsys, folder, tmp_path / "out", "32x31, expected 32x32", str(bad), extra=())


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "I;16"])
def test_image_of_wrong_mode(folder: Path, tmp_path: Path, capsys, mode: str) -> None:
    bad = folder / "test" / "ship" / ("0000.jpg" if mode == "CMYK" else "0000.png")
    (folder / "test" / "ship" / "0000.png").unlink()
    Image.new(mode, (32, 32)).save(bad)
    assert_refused(capsys, folder, tmp_path / "out", f"unsupported image mode {mode}", str(bad),
                   extra=())


@pytest.mark.parametrize("name, content, fragment", [
    ("notes.txt", b"hello", "unsupported file"),
    ("0009.png", b"this is not a png", "not a readable image"),
    ("0009.jpeg", None, "unsupported image format GIF"),
])
def test_non_image_in_class_folder(folder: Path, tmp_path: Path, capsys,
                                   name: str, content: bytes | None, fragment: str) -> None:
    bad = folder / "train" / "horse" / name
    if content is None:
        Image.new("P", (32, 32)).save(bad, format="GIF")
    else:
        bad.write_bytes(content)
    assert_refused(capsys, folder, tmp_path / "out", fragment, str(bad), extra=())


def test_pool_decoding_keeps_order_and_reports_bad_files(tmp_path: Path) -> None:
    """The process-pool path (real data uses it; small fixtures fit in one chunk)."""
    root, train, _ = make_image_folder(tmp_path, n_train_per_class=3, n_test_per_class=1)
    files, labels = image_folder_mod.list_split(root, "train")
    seen: list[int] = []
    images = image_folder_mod.decode_all(files, workers=2, advance=seen.append, chunk=4)
    np.testing.assert_array_equal(images, train.images)
    np.testing.assert_array_equal(labels, train.labels)
    assert sum(seen) == 30 and len(seen) == 8
    Image.new("RGB", (16, 16)).save(files[17])
    with pytest.raises(UserError, match=f"16x16, expected 32x32: {files[17]}$"):
        image_folder_mod.decode_all(files, workers=2, chunk=4)


def test_unknown_class_folder(folder: Path, tmp_path: Path, capsys) -> None:
    (folder / "train" / "cat").rename(folder / "train" / "kitten")
    assert_refused(capsys, folder, tmp_path / "out", "unknown class folder 'kitten'",
                   str(folder / "train" / "kitten"), extra=())


def test_missing_class_folder(folder: Path, tmp_path: Path, capsys) -> None:
    shutil.rmtree(folder / "test" / "truck")
    assert_refused(capsys, folder, tmp_path / "out", "missing class folder",
                   str(folder / "test" / "truck"), extra=())


def test_empty_class_folder(folder: Path, tmp_path: Path, capsys) -> None:
    for f in (folder / "train" / "deer").iterdir():
        f.unlink()
    assert_refused(capsys, folder, tmp_path / "out", "no images in class folder",
                   str(folder / "train" / "deer"), extra=())


def test_missing_train_split(folder: Path, tmp_path: Path, capsys) -> None:
    shutil.rmtree(folder / "train")
    assert_refused(capsys, folder, tmp_path / "out", "missing split folder train/",
                   str(folder / "train"), extra=())


def test_unrecognised_source_dir(tmp_path: Path, capsys) -> None:
    (tmp_path / "stuff").mkdir()
    assert_refused(capsys, tmp_path / "stuff", tmp_path / "out", "unrecognised source directory",
                   extra=())


def test_unwritable_output(cifar_tarball, tmp_path: Path, capsys) -> None:
    tarball, _, _ = cifar_tarball
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Tests run as root, so permissions would not stop us: use a parent that is a file.
    assert_refused(capsys, tarball, blocker / "out", "cannot create output directory",
                   str(blocker / "out"))
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_that_cannot_be_created_late(cifar_tarball, capsys) -> None:
    """Passes the early checks (/proc is a directory) but mkdir fails, even for root."""
    tarball, _, _ = cifar_tarball
    out = Path("/proc/ddpcifar-no-such-dir/out")
    assert_refused(capsys, tarball, out, "cannot create output directory", str(out))


def test_download_failure_is_one_line(tmp_path: Path, capsys) -> None:
    # Port 9 (discard) on localhost: nothing listens, so the connection is refused at once.
    line = assert_refused(capsys, None, tmp_path / "data" / "out", "cannot download",
                          "http://127.0.0.1:9/cifar-10-python.tar.gz", "use --source",
                          extra=("--url", "http://127.0.0.1:9/cifar-10-python.tar.gz"))
    assert "Connection refused" in line
    assert not (tmp_path / "data").exists()  # nor the download cache beside it


def test_existing_out_is_kept_without_force(cifar_tarball, tmp_path: Path, capsys) -> None:
    tarball, _, _ = cifar_tarball
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    capsys.readouterr()
    assert convert(tarball, out, "--allow-unofficial") == 2
    assert "use --force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    assert convert(tarball, out, "--allow-unofficial", "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == PREPARED
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_out_untouched_when_conversion_fails(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.beton").write_bytes(b"old")
    assert convert(tmp_path / "missing", out, "--force") == 2
    assert [p.name for p in out.iterdir()] == ["train.beton"]
    assert (out / "train.beton").read_bytes() == b"old"


# --- load_meta and read_split errors -----------------------------------------------------------

@pytest.fixture
def data_copy(prepared_data, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(prepared_data.data_dir, copy)
    return copy


def test_load_meta_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data directory not found.*nowhere"):
        load_meta(tmp_path / "nowhere")


def test_load_meta_missing_meta(data_copy: Path) -> None:
    (data_copy / "meta.json").unlink()
    with pytest.raises(UserError, match=f"meta.json not found.*{data_copy}"):
        load_meta(data_copy)


def test_load_meta_corrupt_meta(data_copy: Path) -> None:
    (data_copy / "meta.json").write_text('{"format": 1, "classes": [')
    with pytest.raises(UserError, match="corrupt meta.json.*meta.json$"):
        load_meta(data_copy)


def test_load_meta_wrong_number_of_classes(data_copy: Path) -> None:
    raw = json.loads((data_copy / "meta.json").read_text())
    raw["classes"] = raw["classes"][:9]
    (data_copy / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="expected 10 classes, found 9.*meta.json"):
        load_meta(data_copy)


def test_load_meta_missing_beton(data_copy: Path) -> None:
    (data_copy / "test.beton").unlink()
    with pytest.raises(UserError, match="beton file missing.*test.beton"):
        load_meta(data_copy)


def test_load_meta_sha256_mismatch(data_copy: Path) -> None:
    beton = data_copy / "train.beton"
    data = bytearray(beton.read_bytes())
    data[-1] ^= 0xFF
    beton.write_bytes(bytes(data))
    load_meta(data_copy)  # not checked by default: hashing 150 MB costs time on every start
    with pytest.raises(UserError, match="sha256 mismatch.*train.beton"):
        load_meta(data_copy, verify_sha256=True)


def test_read_split_errors(data_copy: Path) -> None:
    with pytest.raises(UserError, match="unknown split 'val'"):
        read_split(data_copy, "val")
    (data_copy / "test.beton").unlink()
    read_split(data_copy, "test")  # the raw arrays are enough
    (data_copy / "test_images.npy").unlink()
    with pytest.raises(UserError, match="beton file missing"):
        read_split(data_copy, "test")


# --- the real script as a subprocess -----------------------------------------------------------

def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data_prep.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    # Warnings and finished progress bars may come first; the error is one line, and last.
    assert lines[-1].startswith("error: "), proc.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


def test_script_default_download_without_network(tmp_path: Path) -> None:
    """The real official URL: this machine has no route to it, so it must fail fast and clean."""
    proc = run_script("--out", "data/cifar10", cwd=tmp_path)
    assert_one_line_error(proc, "cannot download https://www.cs.toronto.edu/~kriz/", "use --source")
    assert not (tmp_path / "data").exists()


def test_script_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    batches = _batches_with(tmp_path, "test_batch", pickle.dumps(_Evil(marker), protocol=2))
    proc = run_script("--source", str(batches), "--out", "out", "--allow-unofficial", cwd=tmp_path)
    assert_one_line_error(proc, "refusing to unpickle", str(batches / "test_batch"))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_script_missing_source_and_existing_out(tmp_path: Path) -> None:
    assert_one_line_error(run_script("--source", "missing", "--out", "out", cwd=tmp_path),
                          "source not found: missing")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    assert_one_line_error(run_script("--source", "missing", "--out", "out", cwd=tmp_path),
                          "use --force", "out")


def test_script_success(tmp_path: Path) -> None:
    root, train, test = make_image_folder(tmp_path, n_train_per_class=1, n_test_per_class=1)
    proc = run_script("--source", str(root), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 10 train + 10 test images" in proc.stderr
    check_converted(tmp_path / "out", train, test)


def test_help_documents_flags() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "data_prep.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--source", "--out", "--allow-unofficial", "--force", "--cache-dir", "--url"):
        assert flag in proc.stdout


# --- the download path, against a real HTTP server on localhost --------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def http_dir(tmp_path: Path):
    """Serve `<tmp_path>/www` over HTTP; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_md5_and_caches(http_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    www, base = http_dir
    tarball, train, test = make_cifar_tarball(www, 6, 6, seed=5)
    url = f"{base}/{tarball.name}"
    cache = tmp_path / "cache"
    # Not the official archive: refused after download, and the partial file is gone.
    assert_refused(capsys, None, tmp_path / "out", "downloaded archive has md5", url,
                   extra=("--url", url, "--cache-dir", str(cache)))
    assert list(cache.iterdir()) == []
    # Declare this archive official: the download is accepted, cached, and converted.
    monkeypatch.setattr(cifar_pickle, "ARCHIVE_MD5", cifar_pickle.md5_hex(tarball.read_bytes()))
    out = tmp_path / "out"
    assert convert(None, out, "--url", url, "--cache-dir", str(cache)) == 0
    check_converted(out, train, test)
    meta = load_meta(out)
    assert (meta.source.kind, meta.source.md5_verified) == ("download", True)
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == tarball.read_bytes()
    # A second run uses the cache: the server no longer has the file.
    tarball.unlink()
    assert convert(None, tmp_path / "out2", "--url", url, "--cache-dir", str(cache)) == 0
    assert sha256(tmp_path / "out2" / "train.beton") == sha256(out / "train.beton")


# --- raw arrays, synthetic data, no FFCV ----------------------------------------------------------


def test_read_split_prefers_arrays_and_falls_back_to_the_beton(data_copy: Path, prepared_data) -> None:
    images, labels = read_split(data_copy, "train")
    np.testing.assert_array_equal(images, prepared_data.train.images)
    # A directory prepared before the arrays existed: meta.json lists the betons only.
    meta = json.loads((data_copy / "meta.json").read_text())
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            (data_copy / f"{split}_{kind}.npy").unlink()
            del meta["sha256"][f"{split}_{kind}.npy"]
    (data_copy / "meta.json").write_text(json.dumps(meta))
    load_meta(data_copy, verify_sha256=True)
    images, labels = read_split(data_copy, "train")  # through FFCV now
    np.testing.assert_array_equal(images, prepared_data.train.images)
    np.testing.assert_array_equal(labels, prepared_data.train.labels)


def test_load_meta_array_sha256_mismatch(data_copy: Path) -> None:
    path = data_copy / "test_labels.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 mismatch.*test_labels.npy"):
        load_meta(data_copy, verify_sha256=True)


def test_synthetic_is_seeded_labelled_and_learnable(tmp_path: Path, capsys) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["--synthetic", "100", "--out", str(first), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synthetic, not for accuracy: wrote 100 train + 20 test")
    assert main(["--synthetic", "100", "--out", str(second), "--quiet"]) == 0
    assert main(["--synthetic", "100", "--seed", "1", "--out", str(other), "--quiet"]) == 0
    assert sorted(p.name for p in first.iterdir()) == PREPARED
    for name in PREPARED:
        assert sha256(first / name) == sha256(second / name), name
    assert sha256(first / "train_images.npy") != sha256(other / "train_images.npy")
    meta = load_meta(first, verify_sha256=True)
    assert meta.source.kind == "synthetic" and meta.source.note.startswith("synthetic, not for accuracy")
    assert meta.counts.train == 100 and meta.counts.test == 20
    assert list(meta.class_counts.train) == [10] * 10 and list(meta.class_counts.test) == [2] * 10
    images, labels = read_split(first, "train")
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    # Learnable: counting the pixels near each class colour names the class.
    from ddpcifar.data.prepare import PALETTE
    distance = np.abs(images[:, :, :, None, :].astype(np.int64) - PALETTE).sum(axis=-1)  # (N,32,32,10)
    guess = (distance < 60).sum(axis=(1, 2)).argmax(axis=1)
    assert (guess == labels).mean() > 0.5


@pytest.mark.parametrize("args, fragment", [
    (["--synthetic", "10"], "--synthetic must be between 50 and 1000000: 10"),
    (["--synthetic", "100", "--source", "x"], "--synthetic and --source exclude each other: x"),
])
def test_synthetic_bad_input(tmp_path: Path, capsys, args: list[str], fragment: str) -> None:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {fragment}" or err.endswith(fragment), err
    assert len(err.splitlines()) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.slow
def test_without_ffcv_synthetic_train_and_evaluate(tmp_path: Path) -> None:
    """data_prep --synthetic, ddpcifar.train (memory loader) and ddpcifar.evaluate where `import ffcv` fails."""
    data, runs = tmp_path / "syn", tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NO_FFCV + code], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=120)

    prep = run(f"sys.argv = ['data_prep.py', '--synthetic', '60', '--out', {str(data)!r}, '--quiet']; "
               "import runpy; runpy.run_path('data_prep.py', run_name='__main__')")
    assert prep.returncode == 0, prep.stderr
    assert "synthetic, not for accuracy" in prep.stdout and "FFCV not importable" in prep.stderr
    assert sorted(p.name for p in data.iterdir()) == [n for n in PREPARED if not n.endswith(".beton")]
    sets = [f"data.dir={data}", "train.epochs=1", "train.global_batch_size=20", "eval.batch_size=12",
            f"logging.runs_dir={runs}", "logging.run_name=noffcv", "logging.progress=false",
            "logging.tensorboard=false", "augment.kind=basic", "data.num_workers=0"]
    argv = ["specs/airbench.json", "--device", "cpu"] + [a for s in sets for a in ("--set", s)]
    train = run(f"from ddpcifar.train import main; raise SystemExit(main({argv!r}))")
    assert train.returncode == 0, train.stderr[-2000:]
    best = runs / "noffcv" / "checkpoints" / "best.pt"
    evaluate = run("from ddpcifar.evaluate import main; "
                   f"raise SystemExit(main([{str(best)!r}, '--data', {str(data)!r}, '--json']))")
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    summary = json.loads((runs / "noffcv" / "summary.json").read_text())
    assert json.loads(evaluate.stdout)["top1"] == pytest.approx(summary["best"]["top1"], abs=1e-9)
    assert "ffcv" not in train.stderr.lower()
