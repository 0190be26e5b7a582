"""TUI performance: run-list start-up with 200 runs, and 100,000 metric lines to curves.

    python benchmarks/tui_bench.py [--repeats 5] [--runs 200] [--lines 100000]

Prints the median (and min/max) of several repetitions of each measurement. Targets from the
issue: run list populated < 1 s; 100k lines loaded and parsed < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tui_fixtures import NOW, epoch_lines, write_run  # noqa: E402
from tui.app import DashboardApp  # noqa: E402
from tui.metrics import MetricsLog, MetricsTail  # noqa: E402
from ddpcifar.runs.reader import RunScanner  # noqa: E402
from tui.widgets.line_chart import LineChart  # noqa: E402
from tui.widgets.run_table import RunTable  # noqa: E402


def make_many_runs(root: Path, n: int) -> None:
    for i in range(n):
        write_run(root, f"run_{i:03d}", model=("resnet8", "era_s9")[i % 2], epochs=8, done=8,
                  seed=i, samples=False)


def make_long_metrics(root: Path, lines: int) -> Path:
    """One run whose metrics.jsonl has `lines` lines: per epoch 20 train lines, then one eval."""
    run = write_run(root, "long", epochs=8, done=1, samples=False)
    template = epoch_lines(1, 8, 0.9, 0)
    train, evaluation = template[0], template[-1]
    out: list[str] = []
    step = 0
    while len(out) < lines:
        for _ in range(20):
            step += 1
            out.append(json.dumps({**train, "step": step, "epoch": step / 20}))
        out.append(json.dumps({**evaluation, "step": step, "epoch": step // 20}))
    (run / "metrics.jsonl").write_text("\n".join(out[:lines]) + "\n")
    return run


async def _until(app: DashboardApp, pilot, check: Callable[[], bool]) -> None:
    while not check():
        await pilot.pause(0.002)


async def time_run_list(root: Path, expected: int) -> float:
    app = DashboardApp(root, poll_interval=1.0, clock=lambda: NOW)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(app, pilot, lambda: bool(app.screen_stack[0].query(RunTable)))
        table = app.screen_stack[0].query_one(RunTable)
        await _until(app, pilot, lambda: table.row_count == expected)
        elapsed = time.perf_counter() - start
    return elapsed


async def time_curves_in_app(root: Path, train_lines: int) -> tuple[float, float, float]:
    """Seconds from app start until the loss chart shows (first chunk, every train point), and
    the time to rasterise the three charts once."""
    app = DashboardApp(root, poll_interval=1.0, clock=lambda: NOW)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(app, pilot, lambda: bool(app.screen_stack[0].query(LineChart)))
        dash = app.screen_stack[0]
        loss = dash.query_one("#chart-loss", LineChart)
        await _until(app, pilot, lambda: bool(loss.series) and len(loss.series[0].x) > 0)
        first = time.perf_counter() - start
        await _until(app, pilot, lambda: len(loss.series[0].x) == train_lines)
        complete = time.perf_counter() - start
        t0 = time.perf_counter()
        for chart in dash.query(LineChart):
            chart._render_lines(chart.size.width, chart.size.height)
        render = time.perf_counter() - t0
    return first, complete, render


def time_parse(path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, train points) to read and parse the file.

    CPU time is reported too because other processes may share the cores: wall time includes waiting for one.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tail = MetricsTail(path)
    log = MetricsLog()
    log.add(tail.read_all().records)
    curves = log.curves()
    return time.perf_counter() - start, time.process_time() - cpu, len(curves.train_step)


def report(name: str, values: list[float], target: str = "") -> None:
    print(f"{name:<46} median {statistics.median(values) * 1000:8.1f} ms   "
          f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})  {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}, {args.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "many"
        make_many_runs(many, args.runs)
        scanner_cold = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            RunScanner(many).scan(NOW)
            scanner_cold.append(time.perf_counter() - t0)
        scanner = RunScanner(many)
        scanner.scan(NOW)
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scanner.scan(NOW)
            warm.append(time.perf_counter() - t0)
        lists = [asyncio.run(time_run_list(many, args.runs)) for _ in range(args.repeats)]
        report(f"scan {args.runs} runs (cold: parse JSON)", scanner_cold)
        report(f"scan {args.runs} runs (warm: stat only)", warm)
        report(f"app start -> run list has {args.runs} rows", lists, "target < 1000 ms")

        long_root = Path(tmp) / "long"
        run = make_long_metrics(long_root, args.lines)
        parses = [time_parse(run / "metrics.jsonl") for _ in range(args.repeats)]
        train_lines = parses[0][2]
        report(f"read+parse {args.lines} metric lines (wall)", [p[0] for p in parses],
               "target < 2000 ms")
        report(f"read+parse {args.lines} metric lines (CPU)", [p[1] for p in parses])
        shown = [asyncio.run(time_curves_in_app(long_root, train_lines))
                 for _ in range(args.repeats)]
        report("app start -> first chunk of curves shown", [s[0] for s in shown])
        report(f"app start -> curves of all {args.lines} lines shown", [s[1] for s in shown])
        report("rasterise the 3 charts (120x40 terminal)", [s[2] for s in shown])
    return 0


if __name__ == "__main__":
    sys.exit(main())
