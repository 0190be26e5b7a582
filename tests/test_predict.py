"""`python -m ddpcifar.predict`: agreement with evaluate, image modes and sizes, output formats,
and bad input (one line on stderr, exit status 2, nothing written).

The trained checkpoint is test_export.py's tiny real run (`trained_run`, trained once per
session on PNG images whose colour says their class); predict on the test split's PNG files,
which are lossless, must reproduce evaluate's top-1 and confusion matrix exactly, with the same
autocast (the run's: bf16 on CPU).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from test_export import CLASSES, TrainedRun, one_line_error, trained_run, write_checkpoint

from ddpcifar.evaluate import main as evaluate_main
from ddpcifar.predict import main as predict_main


def predict(*args: Any) -> int:
    return predict_main([str(a) for a in args])


def predict_json(capsys: pytest.CaptureFixture[str], *args: Any) -> dict[str, Any]:
    assert predict(*args, "--json") == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainedRun:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint(trained) -> Path:
    return trained.run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def png_split(trained) -> Path:
    """The test split's source files: test/<class>/NNN.png, in the prepared split's order."""
    return trained.images / "test"


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("predict_random") / "era.pt", "era_s9")


# ------------------------------------------------------------------ agreement with evaluate


@pytest.mark.parametrize("tta", [0, 2])
def test_png_files_reproduce_evaluates_top1(tta, trained, checkpoint, png_split, capsys):
    assert evaluate_main([str(checkpoint), "--data", str(trained.data_dir), "--json",
                          "--tta", str(tta)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    top1 = evaluated["top1_tta" if tta else "top1"]
    # evaluate's batch of 1000 holds the whole split; so does predict's here.
    got = predict_json(capsys, checkpoint, png_split, "--batch-size", 1000, "--tta", tta)
    assert got["count"] == 100 and got["amp"] == "bf16" and got["tta"] == tta
    truth = [CLASSES.index(Path(p["input"]).parent.name) for p in got["predictions"]]
    pred = [CLASSES.index(p["top"][0]["class"]) for p in got["predictions"]]
    assert sum(t == p for t, p in zip(truth, pred)) / len(pred) == top1
    if not tta:  # evaluate's confusion matrix is of the plain logits
        confusion = np.zeros((10, 10), dtype=int)
        np.add.at(confusion, (truth, pred), 1)
        assert confusion.tolist() == evaluated["confusion"]
    assert len(set(pred)) >= 3, "a net with one answer for every image would prove little"

    # The split itself, named DIR:SPLIT: the same predictions in the same order, with labels.
    split = predict_json(capsys, checkpoint, f"{trained.data_dir}:test", "--batch-size", 1000,
                         "--tta", tta)
    assert split["top1"] == top1 and split["labelled"] == 100
    assert [CLASSES.index(p["label"]) for p in split["predictions"]] == truth
    assert [p["top"] for p in split["predictions"]] == [p["top"] for p in got["predictions"]]


# ------------------------------------------------------------------ images: modes, sizes, folders


def test_modes_sizes_and_resizing(random_checkpoint, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.jpg", quality=95)
    Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    (tmp_path / "notes.txt").write_text("skipped: not an image extension")
    (tmp_path / ".hidden.png").write_bytes(b"skipped: hidden")

    got = predict_json(capsys, random_checkpoint, tmp_path, "--top-k", 10)
    by_name = {Path(p["input"]).name: p for p in got["predictions"]}
    assert list(by_name) == ["big.jpg", "deep.png", "grey.jpg", "palette.gif", "rgb.png",
                             "rgba.png"]
    assert by_name["big.jpg"]["resized_from"] == [64, 48]
    assert by_name["deep.png"]["resized_from"] == [50, 40]
    assert all(by_name[n]["resized_from"] is None for n in ("rgb.png", "rgba.png", "grey.jpg"))
    for p in got["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert sorted({t["class"] for t in p["top"]}) == sorted(CLASSES)
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
    # Alpha is dropped: the RGBA file is the RGB image.
    assert by_name["rgba.png"]["top"] == by_name["rgb.png"]["top"]

    # The table says which files were resized.
    monkeypatch.setenv("COLUMNS", "200")  # rich: no wrapped cells
    assert predict(random_checkpoint, tmp_path / "big.jpg", tmp_path / "rgb.png") == 0
    table = capsys.readouterr().out
    assert "resized from 64x48" in table and table.count("resized from") == 1


def test_no_resize_refuses_other_sizes(random_checkpoint, tmp_path, capsys):
    Image.new("RGB", (40, 30)).save(tmp_path / "wide.png")
    rc = predict(random_checkpoint, tmp_path / "wide.png", "--no-resize")
    one_line_error(capsys, rc, f"image {tmp_path / 'wide.png'} is 40x30, not 32x32 "
                               "(--no-resize refuses to resize)")


def test_csv_written_to_a_file(random_checkpoint, png_split, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert predict(random_checkpoint, png_split / "cat", "--csv", "--out", out, "--top-k", 2) == 0
    assert capsys.readouterr().out == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 10 and list(rows[0]) == ["input", "label", "resized_from", "class_1",
                                                 "probability_1", "class_2", "probability_2"]
    assert all(r["class_1"] in CLASSES and 0 < float(r["probability_1"]) <= 1 for r in rows)
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in rows)


def test_numpy_engine_checkpoint_takes_class_names_from_data(trained, png_split, tmp_path,
                                                             capsys):
    from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential

    npz = tmp_path / "scratch_best.npz"
    Sequential(DEFAULT_ARCHITECTURE).save(npz, meta={"mean": [120.0] * 3, "std": [60.0] * 3,
                                                     "epoch": 1})
    rc = predict(npz, png_split / "dog")
    one_line_error(capsys, rc, "a NumPy engine checkpoint saves no class names: pass --data DIR "
                               "(a prepared data directory) or a DIR:SPLIT input")
    got = predict_json(capsys, npz, png_split / "dog", "--data", trained.data_dir)
    assert got["model"] == "scratch_cnn" and got["classes"] == CLASSES and got["count"] == 10
    rc = predict(npz, png_split / "dog", "--data", trained.data_dir, "--tta", 1)
    one_line_error(capsys, rc, f"--tta 1 does not apply to the NumPy engine checkpoint {npz}: "
                               "it has no test-time augmentation (use --tta 0)")


# ------------------------------------------------------------------ bad input


def test_a_file_that_is_not_an_image(random_checkpoint, tmp_path, capsys):
    path = tmp_path / "photo.png"
    path.write_text("not a PNG at all")
    one_line_error(capsys, predict(random_checkpoint, path), f"not an image: {path}")


def test_a_corrupt_image(random_checkpoint, tmp_path, capsys):
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    ).save(whole)
    path = tmp_path / "cut.png"
    path.write_bytes(whole.read_bytes()[:400])  # the header survives, the pixels do not
    rc = predict(random_checkpoint, path, "--json", "--out", tmp_path / "p.json")
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: corrupt image {path}: ") and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_an_empty_folder(random_checkpoint, tmp_path, capsys):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    rc = predict(random_checkpoint, tmp_path / "empty")
    one_line_error(capsys, rc, f"no image files in folder {tmp_path / 'empty'} (looked for "
                               ".bmp, .gif, .jpeg, .jpg, .pbm, .pgm, .png, .pnm, .ppm, .tif, "
                               ".tiff, .webp, recursively)")


def test_a_path_that_does_not_exist(random_checkpoint, tmp_path, capsys):
    rc = predict(random_checkpoint, tmp_path / "missing.png")
    one_line_error(capsys, rc, f"input not found: {tmp_path / 'missing.png'}")


def test_a_split_that_is_not_there(random_checkpoint, trained, capsys):
    rc = predict(random_checkpoint, f"{trained.data_dir}:valid")
    one_line_error(capsys, rc, f"input {trained.data_dir}:valid: unknown split 'valid' "
                               "(expected one of train, test)")


def test_checkpoint_sha256_mismatch(random_checkpoint, png_split, tmp_path, capsys):
    path = tmp_path / "best.pt"
    data = random_checkpoint.read_bytes()[:-100]  # truncated: the sidecar names the whole file
    path.write_bytes(data)
    path.with_name("best.pt.sha256").write_text(
        random_checkpoint.with_name("era.pt.sha256").read_text())
    rc = predict(path, png_split / "cat")
    one_line_error(capsys, rc, f"checkpoint {path} is corrupt or incomplete: sha256 "
                               f"{hashlib.sha256(data).hexdigest()[:12]}... does not match "
                               "best.pt.sha256")


def test_checkpoint_of_an_unknown_format(png_split, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX protobuf's first bytes
    rc = predict(path, png_split / "cat")
    one_line_error(capsys, rc, f"checkpoint {path} is of an unknown format: neither a ddpcifar "
                               ".pt (a torch zip archive) nor a NumPy engine .npz")


def test_output_path_that_cannot_be_written(random_checkpoint, png_split, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "p.json"
    rc = predict(random_checkpoint, png_split / "cat", "--json", "--out", out)
    one_line_error(capsys, rc, f"cannot write {out}: directory {out.parent} does not exist")
    assert list(tmp_path.iterdir()) == []
