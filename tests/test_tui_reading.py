"""Unit tests for the TUI's file readers (no Textual app): tails, run scan, samples, charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tui_fixtures import CLASSES, NOW, T0, dead_pid, make_fixture_runs, write_run
from tui.metrics import MetricsLog, MetricsTail, ema, latest_evaluation
from ddpcifar.runs.reader import RunScanner, compact_json
from tui.samples import SamplesError, caption, load_samples, sample_epochs
from tui.widgets.halfblock import downscale, image_rows, upscale
from tui.widgets.line_chart import rasterise

REPO = Path(__file__).resolve().parents[1]


def test_tui_never_imports_torch() -> None:
    code = ("import sys, tui.app, tui.__main__, tui.watcher, tui.export; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_tail_holds_back_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read().missing
    line1 = json.dumps({"kind": "train", "epoch": 0.5, "step": 1, "time": 1, "values": {"loss": 2}})
    line2 = json.dumps({"kind": "eval", "epoch": 1, "step": 2, "time": 2, "values": {"loss": 1}})
    path.write_text(line1 + "\n" + line2[:10])
    got = tail.read()
    assert [r["kind"] for r in got.records] == ["train"]
    assert tail.pending_bytes == 10
    assert tail.read().records == []  # nothing new, still incomplete
    with open(path, "a") as fh:
        fh.write(line2[10:] + "\n")
    got = tail.read()
    assert [r["kind"] for r in got.records] == ["eval"] and got.bad_lines == []
    assert tail.offset == path.stat().st_size


def test_tail_reads_big_files_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "epoch": i / 10, "step": i, "time": i,
                         "values": {"loss": 1.0 / (i + 1)}}) for i in range(200)]
    path.write_text("\n".join(lines) + "\n")
    tail = MetricsTail(path, chunk_bytes=1000)  # lines straddle chunk boundaries
    first = tail.read()
    assert first.more and 0 < len(first.records) < 200
    rest = tail.read_all()
    assert not rest.more and rest.bad_lines == []
    steps = [r["step"] for r in first.records + rest.records]
    assert steps == list(range(200))


def test_tail_skips_garbage_and_restarts_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    good = json.dumps({"kind": "train", "epoch": 1, "step": 1, "time": 1, "values": {}})
    path.write_text(f"{good}\n{{not json\n[1, 2]\n\n{good}\n")
    tail = MetricsTail(path)
    got = tail.read()
    assert len(got.records) == 2
    assert got.bad_lines == [got.bad_lines[0], "line 3: no 'kind'"]
    assert got.bad_lines[0].startswith("line 2: not JSON")
    path.write_text(good + "\n")  # replaced by a shorter file: read from the start again
    got = tail.read()
    assert got.reset and len(got.records) == 1


def test_metrics_log_columns_and_unknown_kinds() -> None:
    log = MetricsLog()
    log.add([{"kind": "train", "epoch": 0.5, "step": 5, "values": {"loss": 2.0, "top1": 0.2, "lr": 0.1}},
             {"kind": "gpu", "epoch": 0.5, "step": 5, "values": {"mem": 3}},
             {"kind": "train", "epoch": 1.0, "step": 10, "values": {"loss": "bad", "lr": 0.2}},
             {"kind": "eval", "epoch": 1, "step": 10,
              "values": {"loss": 1.5, "top1": 0.4, "per_class": [0.4, 0.4], "confusion": [[4, 6], [6, 4]]}}])
    c = log.curves()
    assert c.train_step.tolist() == [5.0, 10.0]
    assert c.train_loss[0] == 2.0 and np.isnan(c.train_loss[1]) and np.isnan(c.train_top1[1])
    assert c.eval_top1.tolist() == [0.4] and c.lines == 4
    ev = latest_evaluation(c.last_eval, None)
    assert ev is not None and ev.epoch == 1 and ev.confusion == [[4, 6], [6, 4]]
    assert ev.top1_tta is None
    final = {"final": {"epoch": 2, "top1": 0.5, "top1_tta": 0.55, "per_class": [0.5, 0.5],
                       "confusion": [[5, 5], [5, 5]]}}
    got = latest_evaluation(c.last_eval, final)
    assert got.source == "summary.json" and got.top1_tta == 0.55
    assert latest_evaluation(None, {"final": {"per_class": ["x"], "confusion": []}}) is None


def test_ema_is_bias_corrected_and_skips_nan() -> None:
    x = np.array([1.0, 1.0, np.nan, 3.0])
    y = ema(x, 0.5)
    assert y[0] == 1.0 and y[1] == 1.0 and np.isnan(y[2])
    # after two 1s the raw average is 0.75 with norm 0.75; one more step at weight 0.5 adds 3
    assert y[3] == pytest.approx((0.5 * 0.75 + 0.5 * 3) / (0.5 * 0.75 + 0.5))
    assert ema(x, 0.0) is x


def test_scanner_states_and_elapsed(tmp_path: Path) -> None:
    runs = make_fixture_runs(tmp_path)
    (tmp_path / "not_a_run").mkdir()
    scan = RunScanner(tmp_path).scan(NOW)
    by = {r.name: r for r in scan.runs}
    assert sorted(by) == sorted(runs)
    assert by["resnet_long"].state == "finished" and by["resnet_long"].elapsed_s == 245.0
    assert by["era_live"].state == "running" and by["era_live"].elapsed_s == NOW - T0
    assert by["ghost"].state == "lost"  # running, pid dead, updated an hour ago
    assert by["broken"].state == "failed" and by["broken"].error.startswith("RuntimeError")
    assert by["era_live"].epoch == 3 and by["era_live"].epochs == 10
    assert by["resnet_long"].classes == tuple(CLASSES)
    assert scan.problems == []


def test_dead_pid_recent_update_is_not_stale(tmp_path: Path) -> None:
    write_run(tmp_path, "r", state="running", done=1, pid=dead_pid(), updated=NOW - 10)
    assert RunScanner(tmp_path).scan(NOW).runs[0].state == "running"


def test_scanner_reports_corrupt_status_and_missing_dir(tmp_path: Path) -> None:
    write_run(tmp_path, "ok", done=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.json").write_text("{ half")
    scanner = RunScanner(tmp_path)
    scan = scanner.scan(NOW)
    bad = next(r for r in scan.runs if r.name == "bad")
    assert bad.state == "unreadable"
    assert len(scan.problems) == 1 and scan.problems[0].startswith("bad/status.json: unreadable")
    assert RunScanner(tmp_path / "nope").scan(NOW).problems[0].startswith("runs directory not found")


def test_samples_roundtrip_and_corrupt_archive(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", done=2)
    assert sample_epochs(run) == [1, 2]
    s = load_samples(run, 2)
    assert s.images.shape == (40, 32, 32, 3) and (s.true != s.pred).all()
    (run / "samples" / "epoch_0003.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SamplesError, match=r"samples/epoch_0003.npz: cannot read"):
        load_samples(run, 3)
    np.savez(run / "samples" / "epoch_0004.npz", images=np.zeros((2, 32, 32, 3), np.uint8),
             true=np.zeros(3, np.int64), pred=np.zeros(2), confidence=np.zeros(2), index=np.zeros(2))
    with pytest.raises(SamplesError, match="'true' has shape"):
        load_samples(run, 4)
    assert caption(CLASSES, 3, 5, 0.876) == "cat → dog (88%)"
    assert caption(CLASSES, 11, 0, 0.5) == "class 11 → airplane (50%)"


def test_halfblock_and_scaling() -> None:
    img = np.zeros((4, 2, 3), np.uint8)
    img[0] = 255  # top row white
    rows = image_rows(img)
    assert len(rows) == 2 and len(rows[0]) == 2
    top = rows[0][0].style
    assert top.color.triplet == (255, 255, 255) and top.bgcolor.triplet == (0, 0, 0)
    assert downscale(np.full((32, 32, 3), 7, np.uint8), 2).shape == (16, 16, 3)
    assert upscale(img, 3).shape == (12, 6, 3)


def test_rasterise_covers_polyline_and_handles_many_points() -> None:
    x = np.array([0.0, 1.0])
    y = np.array([0.0, 1.0])
    px, py = rasterise(x, y, (0, 1), (0, 1), 10, 10)
    dots = set(zip(px.tolist(), py.tolist()))
    assert {(0, 9), (9, 0)} <= dots  # y grows upward: (0, 0) is the bottom-left dot
    assert {x for x, _ in dots} == set(range(10))  # no gaps along the line
    n = 100_000
    big_x = np.arange(n, dtype=float)
    px, py = rasterise(big_x, np.sin(big_x / 1000), (0, n - 1), (-1, 1), 200, 80)
    assert px.min() == 0 and px.max() == 199 and py.min() == 0 and py.max() == 79
    assert len(rasterise(np.array([np.nan]), np.array([1.0]), (0, 1), (0, 1), 4, 4)[0]) == 0
    px, py = rasterise(np.array([0.5]), np.array([0.5]), (0, 1), (0, 1), 9, 9)
    assert set(zip(px.tolist(), py.tolist())) == {(4, 4), (3, 4), (5, 4), (4, 3), (4, 5)}


def test_compact_json_roundtrips() -> None:
    value = {"a": [1, 2], "m": [[1, 2], [3, 4]], "d": {"x": None}, "l": [{"k": 1}], "e": {}}
    text = compact_json(value)
    assert json.loads(text) == value
    assert '"a": [1, 2]' in text and "  [3, 4]" in text


def test_watcher_reports_problems_once_and_streams_chunks(tmp_path: Path) -> None:
    from tui.messages import MetricsUpdated, ReadProblem, RunsScanned, SampleEpochsListed
    from tui.watcher import RunWatcher

    write_run(tmp_path, "big", done=8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.json").write_text("nope")
    # small chunks, no rate limit: one poll posts several growing updates
    watcher = RunWatcher(tmp_path, clock=lambda: NOW, chunk_bytes=2000, post_interval=0.0)
    first = list(watcher.poll(["big"]))
    assert isinstance(first[0], RunsScanned) and len(first[0].runs) == 2
    assert [m.text for m in first if isinstance(m, ReadProblem)] == [
        "bad/status.json: unreadable (Expecting value: line 1 column 1 (char 0))"]
    updates = [m for m in first if isinstance(m, MetricsUpdated)]
    assert len(updates) > 2
    sizes = [len(m.curves.train_step) for m in updates]
    assert sizes == sorted(sizes) and sizes[-1] == 8 * 4  # 4 train lines per epoch
    assert [m.epochs for m in first if isinstance(m, SampleEpochsListed)] == [list(range(1, 9))]
    again = list(watcher.poll(["big"]))
    assert [type(m) for m in again] == [RunsScanned]  # nothing new: no repeats


def test_watcher_survives_an_unreadable_metrics_path(tmp_path: Path) -> None:
    from tui.messages import ReadProblem
    from tui.watcher import RunWatcher

    run = write_run(tmp_path, "odd", done=1)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # a directory where the log should be
    messages = list(RunWatcher(tmp_path, clock=lambda: NOW).poll(["odd"]))
    problems = [m.text for m in messages if isinstance(m, ReadProblem)]
    assert problems == ["odd/metrics.jsonl: cannot read (Is a directory)"]


def test_tail_keeps_multibyte_characters_split_across_reads(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    line = json.dumps({"kind": "note", "epoch": 1, "step": 1, "time": 0,
                       "values": {"text": "été → ok"}}, ensure_ascii=False)
    path.write_bytes((line + "\n").encode("utf-8") * 2)
    got = MetricsTail(path, chunk_bytes=1).read_all()  # one byte per read
    assert got.bad_lines == []
    assert [r["values"]["text"] for r in got.records] == ["été → ok"] * 2
