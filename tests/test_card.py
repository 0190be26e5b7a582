"""The model card (ddpcifar.card): written when a run ends, by either engine and whatever the
end, with summary.json's own numbers; `python -m ddpcifar.card` writes the same card again and
refuses bad input with one line; an export shows with its parity; a card that fails never
changes how the run ended; the dashboard's Card tab shows it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.widgets import Markdown, Static

from runs_fixtures import ENV, ROOT, status, tiny_spec, wait_for
from tui_fixtures import make_fixture_runs, select_run, sync, wait_until

from ddpcifar.card import CARD, IMAGES_DIR
from ddpcifar.card.__main__ import main as card_main
from ddpcifar.card.write import SIZES
from ddpcifar.runs.report import Reporter
from ddpcifar.runs.ending import end_run
from ddpcifar.runs.rundir import RunDir
from tui.app import DashboardApp
from tui.widgets.card import CardPanel

TINY_CNN = [{"type": "conv", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
            {"type": "relu"}, {"type": "maxpool", "size": 4}, {"type": "flatten"},
            {"type": "linear", "out": 10}]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def train(*specs: Path, cwd: Path) -> None:
    """`python -m ddpcifar.train` on each spec, side by side; each must end cleanly and quietly."""
    procs = [subprocess.Popen([sys.executable, "-m", "ddpcifar.train", str(s)], cwd=cwd, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in specs]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "warning: no model card" not in err, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prepared_data) -> Path:
    """Two finished runs: `t` (torch, a validation split, TTA) and `n` (the NumPy engine)."""
    work = tmp_path_factory.mktemp("card")
    data = prepared_data.data_dir
    train(tiny_spec(work / "t.json", data, name="t", epochs=2, data={"val_size": 100},
                    eval={"tta": 1}),
          tiny_spec(work / "n.json", data, name="n", epochs=1, model={"name": "scratch_cnn"},
                    scratch={"architecture": TINY_CNN}),
          cwd=work)
    return work / "runs"


# -- reading the card back -------------------------------------------------------------------


def section(card: str, heading: str) -> str:
    """The text under `## heading` (or `### heading`), up to the next heading of any level."""
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading
                 and line.startswith("#"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start + 1:end])


def rows(text: str) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell (header and rule included)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def read(run: Path) -> tuple[str, dict[str, Any]]:
    return (run / CARD).read_text(), json.loads((run / "summary.json").read_text())


def check_numbers(card: str, summary: dict[str, Any]) -> None:
    """The card's numbers are summary.json's: parameters, top-1/top-5 (final and best), time to
    accuracy, and every class's accuracy and counts."""
    final, best = summary["final"], summary["best"]
    model = rows(section(card, "Model"))
    assert model["parameters"] == [f"{summary['parameters']:,}"]
    results = rows(section(card, "Results"))
    assert results["test top-1"] == [pct(final["top1"]), pct(best["top1"])]
    assert results["test top-5"] == [pct(final["top5"]), pct(best["top5"])]
    time_rows = rows(section(card, "Time"))
    assert time_rows["time to accuracy"][0].startswith(
        f"{summary['timing']['time_to_accuracy_s']:.3f} s (")
    per_class = rows(section(card, f"Per class (test split, epoch {final['epoch']})"))
    for i, name in enumerate(summary["classes"]):
        row = final["confusion"][i]
        assert per_class[name][:2] == [pct(final["per_class"][i]),
                                       f"{row[i]:,} / {sum(row):,}"], name


def test_a_finished_torch_run_has_a_card_with_its_summary_numbers(runs, prepared_data):
    run = runs / "t"
    card, summary = read(run)
    check_numbers(card, summary)
    assert card.startswith("# Model card: t\n")
    model = rows(section(card, "Model"))
    assert model["engine"] == ["torch"] and model["world size"] == ["1"]
    assert model["device"][0].startswith("cpu: ") and model["device"][0].endswith(", gloo backend")
    assert model["state"] == ["finished"]
    results = rows(section(card, "Results"))
    best, val = summary["best"], summary["val"]
    assert best["selected_by"] == "val_loss"
    assert results["test top-1 with TTA (level 1)"] == [pct(summary["final"]["top1_tta"]), "—"]
    assert results["validation top-1"] == [pct(val["top1"]), pct(best["val_top1"])]
    assert results["validation loss"] == [f"{val['loss']:.4f}", f"{best['val_loss']:.4f}"]
    # Data: meta.json's checksums, and its source (the session's unofficial tarball).
    meta = json.loads((prepared_data.data_dir / "meta.json").read_text())
    data = rows(section(card, "Data"))
    for name, digest in meta["sha256"].items():
        assert data[f"sha256 `{name}`"] == [f"`{digest}`"]
    assert "- The source was not verified as the official CIFAR-10 release: NOT the " in card
    assert "- Validation split: 100 training images held out" in card
    # The resolved spec, whole, in a collapsed block.
    spec_block = section(card, "Spec").split("```json\n")[1].split("\n```")[0]
    assert json.loads(spec_block) == json.loads((run / "spec.json").read_text())
    assert "<details><summary>" in section(card, "Spec")
    # The charts, linked and of their sizes.
    for name, size in SIZES.items():
        assert f"]({IMAGES_DIR}/{name}.png)" in card
        with Image.open(run / IMAGES_DIR / f"{name}.png") as image:
            assert image.size == size
    assert not [p for p in run.rglob("*.tmp")], "temporary files left behind"


def test_a_finished_numpy_run_has_a_card_with_its_summary_numbers(runs, tmp_path):
    card, summary = read(runs / "n")
    check_numbers(card, summary)
    model = rows(section(card, "Model"))
    assert model["engine"] == ["numpy"] and model["device"] == ["cpu (NumPy)"]
    assert "validation top-1" not in rows(section(card, "Results"))
    assert (runs / "n" / IMAGES_DIR / "misclassified.png").is_file()
    # The NumPy engine's process writes the card: that loads neither torch nor pydantic.
    shutil.copytree(runs / "n", tmp_path / "n")
    code = ("import sys\nfrom ddpcifar.card import write_card\nwrite_card(sys.argv[1])\n"
            "print(sorted(m for m in ('torch', 'pydantic', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "n")], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "['matplotlib']\n", "")
    assert (tmp_path / "n" / CARD).read_text() == card


def test_a_stopped_run_has_a_card_that_says_so(tmp_path, prepared_data):
    spec = tiny_spec(tmp_path / "s.json", prepared_data.data_dir, name="s", epochs=30)
    run = tmp_path / "runs" / "s"
    proc = subprocess.Popen([sys.executable, "-m", "ddpcifar.train", str(spec)], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = run / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and '"kind": "eval"' in metrics.read_text(), 180,
                 "the first evaluation")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "warning: no model card" not in err, err
    st = status(run)
    assert st["state"] == "stopped" and st["error"].startswith("stopped by SIGTERM at step ")
    card, summary = read(run)
    epoch = summary["final"]["epoch"]
    assert epoch < 30
    assert f"> **The run stopped**: {st['error']}. The metrics below are from its last " \
           f"evaluation (epoch {epoch} of 30 planned), not from a finished training." in card
    assert f"- The run stopped ({st['error']}): the metrics are from its last evaluation " \
           f"(epoch {epoch}), not from the end of its planned 30 epochs." in card
    check_numbers(card, summary)

    # A sweep prunes a trial by stopping it and marking it pruned: the card follows.
    end_run(run, "pruned", error="pruned by the sweep after epoch 1 (median pruner)")
    card = (run / CARD).read_text()
    assert "> **The run was pruned**: pruned by the sweep after epoch 1 (median pruner). " in card
    check_numbers(card, summary)


def test_the_command_writes_the_same_card_again_and_refuses_bad_input(runs, tmp_path, capsys):
    run = tmp_path / "t"
    shutil.copytree(runs / "t", run)
    card = (run / CARD).read_bytes()
    charts = {p.name: p.read_bytes() for p in (run / IMAGES_DIR).iterdir()}
    (run / CARD).unlink()
    shutil.rmtree(run / IMAGES_DIR)
    done = subprocess.run([sys.executable, "-m", "ddpcifar.card", str(run)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{run / CARD}\n", "")
    assert (run / CARD).read_bytes() == card  # the card the run wrote when it ended
    assert {p.name: p.read_bytes() for p in (run / IMAGES_DIR).iterdir()} == charts

    helped = subprocess.run([sys.executable, "-m", "ddpcifar.card", "--help"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "usage: python -m ddpcifar.card" in helped.stdout
    assert "MODEL_CARD.md" in helped.stdout and "time to accuracy" in helped.stdout

    def refused(path: Path, message: str) -> None:
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert card_main([str(path)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    refused(tmp_path / "nope", f"run directory not found: {tmp_path / 'nope'}")
    refused(tmp_path, f"not a run directory (no status.json): {tmp_path}")
    (run / "summary.json").write_text("{ not json")
    refused(run, f"{run / 'summary.json'}: unreadable (Expecting property name enclosed in "
                 "double quotes: line 1 column 3 (char 2))")
    shutil.copy(runs / "t" / "summary.json", run / "summary.json")
    (run / "exports.json").write_text("[")
    refused(run, f"corrupt exports.json (Expecting value: line 1 column 2 (char 1)): "
                 f"{run / 'exports.json'}")
    (run / "exports.json").unlink()
    shutil.rmtree(run / IMAGES_DIR)
    (run / IMAGES_DIR).write_text("in the way")
    refused(run, f"cannot write the model card in {run}: {run / IMAGES_DIR} is not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        (run / IMAGES_DIR).unlink()
        run.chmod(0o555)
        try:
            refused(run, f"cannot write the model card in {run}: {run} is not writable")
        finally:
            run.chmod(0o755)


def test_an_export_appears_in_the_card_with_its_parity(runs, tmp_path, capsys):
    from ddpcifar.export import main as export_main

    run = tmp_path / "t"
    shutil.copytree(runs / "t", run)
    out = tmp_path / "t.ts"
    assert export_main([str(run / "checkpoints" / "best.pt"), "--format", "torchscript",
                        "--out", str(out), "--parity-images", "20"]) == 0
    [entry] = json.loads((run / "exports.json").read_text())
    assert card_main([str(run)]) == 0
    capsys.readouterr()
    table = rows(section((run / CARD).read_text(), "Exports"))
    parity = entry["parity"]
    assert table["torchscript"][:3] == [f"`{out}`", f"{out.stat().st_size:,} bytes, sha256 "
                                        f"`{entry['sha256'][:12]}…`", f"`{entry['checkpoint']}`"]
    assert table["torchscript"][3] == (
        f"20 images ({parity['source']}): max abs logit difference "
        f"{parity['max_abs_logit_diff']:.2e} (allowed {parity['max_abs_diff_allowed']}), top-1 "
        f"agreement {pct(parity['top1_agreement'])} (at least "
        f"{pct(parity['min_top1_agreement'])}), passed")


def test_a_card_that_fails_is_a_warning_and_the_run_ends_as_it_did(tmp_path, capfd):
    path = tmp_path / "r"
    run = RunDir(path, name="r", model="era_s9", engine="torch", epochs=1, world_size=1,
                 classes=CLASSES)
    (path / "exports.json").write_text("{")  # the card cannot read it
    Reporter(run, max_samples=0, sample_images=lambda i: i).end("failed", "boom")
    assert capfd.readouterr().err == (
        f"warning: no model card for {path}: corrupt exports.json (Expecting property name "
        f"enclosed in double quotes: line 1 column 2 (char 1)): {path / 'exports.json'}\n")
    assert (status(path)["state"], status(path)["error"]) == ("failed", "boom")
    assert not (path / CARD).exists()


def test_a_run_without_an_evaluation_gets_a_card_too(tmp_path):
    path = tmp_path / "r"
    run = RunDir(path, name="r", model="era_s9", engine="torch", epochs=3, world_size=2,
                 classes=CLASSES)
    Reporter(run, max_samples=0, sample_images=lambda i: i).end("failed", "CUDA out of memory")
    card = (path / CARD).read_text()
    assert "> **The run failed**: CUDA out of memory. It ended before its first evaluation: " \
           "there are no metrics." in card
    assert "No evaluation yet." in card and "No spec.json in the run directory." in card
    assert not (path / IMAGES_DIR).exists()


@sync
async def test_the_card_tab_shows_the_card_and_says_when_there_is_none(runs, tmp_path):
    root = tmp_path / "runs"
    make_fixture_runs(root)  # runs without a card
    shutil.copytree(runs / "t", root / "t")
    app = DashboardApp(root, poll_interval=0.05)
    async with app.run_test(size=(130, 44)) as pilot:
        await select_run(pilot, app, "t")
        await pilot.press("6")
        dash = app.screen_stack[0]
        markdown = dash.query_one("#card-markdown", Markdown)
        note = dash.query_one("#card-note", Static)
        await wait_until(pilot, lambda: markdown.source.startswith("# Model card: t\n"))
        assert str(note.content).startswith(f"{root / 't' / CARD} (charts")
        assert f"image (loss): `{root / 't' / IMAGES_DIR / 'loss.png'}`" in markdown.source
        assert "<details>" not in markdown.source and "**spec.json: the resolved spec**" in \
            markdown.source
        await wait_until(pilot, lambda: bool(markdown.query("MarkdownTable")))  # rendered
        await select_run(pilot, app, "era_short")
        await wait_until(pilot, lambda: "era_short has no model card yet" in str(note.content))
        assert not dash.query_one(CardPanel).query_one("#card-scroll").display
