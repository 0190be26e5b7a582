"""The dashboard's long-log path: block parsing, columns, EMA, decimation, posting rate.

Each fast path is checked against a plain reference written here (per-line `json.loads`, the
EMA loop, a rasteriser over every point), so a shortcut that changes an answer fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tui_fixtures import NOW, append_epoch, write_run
from tui.metrics import CHUNK_BYTES, MetricsLog, MetricsTail, ema
from tui.widgets.line_chart import envelope, rasterise


def _line(i: int) -> str:
    kind = "eval" if i % 21 == 20 else "train"
    return json.dumps({"kind": kind, "epoch": i / 21, "step": i, "time": i * 0.1,
                       "values": {"loss": 1 / (i + 1), "top1": (i % 100) / 100, "lr": 0.1}})


# Lines each judged on its own: valid, blank, broken, not a record, and pairs that are only
# valid JSON when joined to a neighbour (a bracket opened on one line and closed on the next,
# two values on one line), which a parser of joined lines could take for records.
ODD_LINES = [
    "",
    "   ",
    "{not json",
    "[1, 2]",
    "42",
    '{"epoch": 1, "values": {}}',
    '{"kind": 3, "values": {}}',
    '  {"kind": "train", "epoch": 0.5, "step": 1, "values": {"loss": 2.5}}  ',
    '{"kind": "train", "epoch": 0.5, "step": 1, "values": {"loss": 2.5}}\r',
    '{"kind": "train", "step": 2, "values": {"loss": 1}} trailing',
    '{"kind": "train", "step": 3, "values": {"loss": [1',
    '2]}}',
    '{"kind": "train", "values": {}}, {"kind": "eval", "values": {}}',
    '\ufeff{"kind": "train", "values": {}}',
    '{"kind": "note", "values": {"text": "été → ok", "nan": NaN}}',
    '{"kind": "train", "step": 4, "values": {"loss": true, "top1": "0.5", "lr": null}}',
]


def _reference(lines: list[str]) -> tuple[list[dict], list[str]]:
    """The per-line parse the dashboard always did: json.loads on each line, in order."""
    records, bad = [], []
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as err:
            bad.append(f"line {no}: not JSON ({str(err)[:60]})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            bad.append(f"line {no}: no 'kind'")
            continue
        records.append(record)
    return records, bad


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe equality


def _log_file(tmp_path: Path) -> tuple[Path, list[str], str]:
    lines = [_line(i) for i in range(3000)]
    for k, odd in enumerate(ODD_LINES):  # scattered over several 1024-line blocks
        lines.insert(150 * k + 7, odd)
    tail_text = _line(9999)[:25]  # a half-written last line
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(("\n".join(lines) + "\n" + tail_text).encode("utf-8"))
    return path, lines, tail_text


@pytest.mark.parametrize("chunk_bytes", [61, 1000, 65536, CHUNK_BYTES])
def test_block_parsing_matches_line_by_line(tmp_path: Path, chunk_bytes: int) -> None:
    path, lines, tail_text = _log_file(tmp_path)
    want_records, want_bad = _reference(lines)
    assert len(want_bad) == 10 and len(want_records) == 3000 + 4  # the fixture is as meant
    tail = MetricsTail(path, chunk_bytes=chunk_bytes)
    got = tail.read_all()
    assert got.bad_lines == want_bad
    assert got.count == len(got.records) == len(want_records)
    assert _same(got.records, want_records)
    assert tail.pending_bytes == len(tail_text.encode())
    # Read straight into a log, the columns are those of the reference records.
    log = MetricsLog()
    into = MetricsTail(path, chunk_bytes=chunk_bytes).read_all(into=log)
    assert into.records == [] and into.count == len(want_records) and into.bad_lines == want_bad
    ref = MetricsLog()
    ref.add(want_records)
    mine, theirs = log.curves(), ref.curves()
    for name in ("train_epoch", "train_step", "train_loss", "train_top1", "lr",
                 "eval_epoch", "eval_step", "eval_loss", "eval_top1"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
    assert mine.lines == theirs.lines == len(want_records)
    assert mine.last_eval == theirs.last_eval


def test_columns_do_not_depend_on_batching() -> None:
    odd = [{"kind": "train", "step": 1, "values": {"loss": True, "top1": "0.5", "lr": 10 ** 400}},
           {"kind": "train", "step": 2, "values": {"loss": 1, "top1": None, "lr": 0.1}},
           {"kind": "train", "step": 3, "values": {"loss": "bad", "top1": 0.5, "lr": 0.2}}]
    whole, split = MetricsLog(), MetricsLog()
    whole.add(odd)
    for record in odd:
        split.add([record])
    for log in (whole, split):
        c = log.curves()
        # a bool, a string or an int too big for a float is not a number, in any batch
        assert np.isnan(c.train_loss[[0, 2]]).all() and c.train_loss[1] == 1.0
        assert np.isnan(c.train_top1[:2]).all() and np.isnan(c.lr[0]) and c.lr[2] == 0.2


def test_curves_handed_out_survive_later_reads_and_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line(i) + "\n" for i in range(40)))
    tail, log = MetricsTail(path), MetricsLog()
    tail.read(into=log)
    before = log.curves()
    steps = before.train_step.copy()
    assert not before.train_step.flags.writeable  # shared with the log: read-only
    with open(path, "a") as fh:
        fh.write("".join(_line(i) + "\n" for i in range(40, 5000)))  # regrows the buffers
    tail.read(into=log)
    assert len(log.curves().train_step) > len(steps)
    np.testing.assert_array_equal(before.train_step, steps)
    path.write_text(_line(0) + "\n")  # replaced by a shorter file: start over
    result = tail.read(into=log)
    assert result.reset and log.lines == 1 and len(log.curves().train_step) == 1
    np.testing.assert_array_equal(before.train_step, steps)


def _ema_loop(values: np.ndarray, weight: float) -> np.ndarray:
    out = np.empty_like(values)
    acc = norm = 0.0
    for i, v in enumerate(values.tolist()):
        if v != v:
            out[i] = v
            continue
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


@pytest.mark.parametrize("weight", [0.05, 0.6, 0.9, 0.99, 0.999])
def test_vectorised_ema_matches_the_loop(weight: float) -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 1000, 1174, 5000, 30_000):  # around and across the block lengths
        x = rng.normal(2.0, 1.0, n) * 10.0 ** rng.uniform(-3, 3)
        x[rng.random(n) < 0.1] = np.nan
        got, want = ema(x, weight), _ema_loop(x, weight)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
        finite = ~np.isnan(x)
        if finite.any():  # the first value is computed exactly as the loop does
            assert got[finite][0] == want[finite][0]


def _columns(x: np.ndarray, xlim: tuple[float, float], width: int) -> np.ndarray:
    return np.clip(np.rint((x - xlim[0]) / (xlim[1] - xlim[0]) * (width - 1)), 0, width - 1)


def test_decimation_keeps_every_window_min_and_max() -> None:
    n, width = 1_000_000, 160
    rng = np.random.default_rng(2)
    x = np.arange(n, dtype=float)
    y = np.sin(x / 5e4) + rng.normal(0, 0.01, n)
    y[123_457] = 50.0  # one spike and one dip among a million points
    y[765_433] = -50.0
    y[400_000] = np.nan
    dx, dy = envelope(x, y, (0.0, n - 1.0), width)
    assert len(dx) <= 4 * width
    assert dy.max() == 50.0 and dx[dy.argmax()] == 123_457
    assert dy.min() == -50.0 and dx[dy.argmin()] == 765_433
    assert np.isfinite(dy).all()
    # window by window: the same minimum and maximum as all the points in it
    ok = np.isfinite(y)
    full_col, dec_col = _columns(x[ok], (0, n - 1), width), _columns(dx, (0, n - 1), width)
    for c in np.unique(full_col)[::7]:
        window, kept = y[ok][full_col == c], dy[dec_col == c]
        assert kept.min() == window.min() and kept.max() == window.max()


def _rasterise_every_point(x: np.ndarray, y: np.ndarray, xlim, ylim, width: int,
                           height: int) -> set[tuple[int, int]]:
    """Reference: per dot column the span from lowest to highest point, each column's first
    point joined to the previous column's last, over all points (no decimation)."""
    ok = np.isfinite(x) & np.isfinite(y)
    px = _columns(x[ok], xlim, width).astype(int)
    py = np.clip(np.rint((ylim[1] - y[ok]) / (ylim[1] - ylim[0]) * (height - 1)), 0,
                 height - 1).astype(int)
    order = np.argsort(px, kind="stable")
    px, py = px[order].tolist(), py[order].tolist()
    dots: set[tuple[int, int]] = set()
    cols: dict[int, list[int]] = {}
    for c, r in zip(px, py):
        cols.setdefault(c, []).append(r)
    prev = None
    for c in sorted(cols):
        rows = cols[c]
        dots |= {(c, r) for r in range(min(rows), max(rows) + 1)}
        if prev is not None:
            steps = max(abs(c - prev[0]), abs(rows[0] - prev[1])) + 1
            dots |= set(zip(np.rint(np.linspace(prev[0], c, steps)).astype(int).tolist(),
                            np.rint(np.linspace(prev[1], rows[0], steps)).astype(int).tolist()))
        prev = (c, rows[-1])
    return dots


@pytest.mark.parametrize("sorted_x", [True, False])
def test_decimated_raster_is_the_raster_of_every_point(sorted_x: bool) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    x = np.sort(rng.uniform(0, 100, n)) if sorted_x else rng.uniform(0, 100, n)
    y = np.cumsum(rng.normal(0, 1, n))
    y[rng.integers(0, n, 50)] = np.nan
    xlim, ylim = (0.0, 100.0), (float(np.nanmin(y)), float(np.nanmax(y)))
    assert len(envelope(x, y, xlim, 60)[0]) < n // 50  # it did decimate
    px, py = rasterise(x, y, xlim, ylim, 60, 40)
    assert set(zip(px.tolist(), py.tolist())) == _rasterise_every_point(x, y, xlim, ylim, 60, 40)


def test_watcher_posts_a_long_backlog_at_a_bounded_rate(tmp_path: Path) -> None:
    from tui.messages import MetricsUpdated
    from tui.watcher import POST_GROWTH, RunWatcher

    run = write_run(tmp_path, "big", done=8)
    path = run / "metrics.jsonl"
    with open(path, "a") as fh:
        fh.write("".join(_line(i) + "\n" for i in range(4000)))
    total = sum(1 for raw in path.read_text().splitlines() if raw.strip())
    now = [0.0]
    watcher = RunWatcher(tmp_path, clock=lambda: NOW, chunk_bytes=4000, monotonic=lambda: now[0])
    updates = [m for m in watcher.poll(["big"]) if isinstance(m, MetricsUpdated)]
    # The clock stands still: the first chunk at once, then only the whole backlog.
    assert [m.curves.lines for m in updates][-1] == total and len(updates) == 2
    assert updates[0].curves.lines < total
    # A live run's new lines are posted in the next poll, however recent the last post.
    append_epoch(run, 9, epochs=10, samples=False)
    again = [m for m in watcher.poll(["big"]) if isinstance(m, MetricsUpdated)]
    assert len(again) == 1 and again[0].curves.lines > total

    # A clock that runs: posts come as the log grows geometrically, not every chunk.
    ticking = iter(np.arange(0.0, 1e6, 10.0).tolist())
    fresh = RunWatcher(tmp_path, clock=lambda: NOW, chunk_bytes=4000,
                       monotonic=lambda: next(ticking))
    lines = [m.curves.lines for m in fresh.poll(["big"]) if isinstance(m, MetricsUpdated)]
    chunks = path.stat().st_size // 4000
    assert 2 < len(lines) < chunks / 4
    assert all(b >= POST_GROWTH * a for a, b in zip(lines[:-2], lines[1:-1]))
