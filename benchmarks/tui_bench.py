"""TUI performance: run-list start-up with 200 runs, and 100,000 metric lines to curves.

    python benchmarks/tui_bench.py [--repeats 5] [--runs 200] [--lines 100000]

Prints the median (and min/max) of several repetitions of each measurement. Targets from the
issues: run list populated < 1 s; 100k lines loaded and parsed < 2 s; a run of 1,000,000
lines drawn (every curve, from app start) < 5 s.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/provenance.py

from provenance import cpu_model  # noqa: E402
from tests.tui_fixtures import NOW, epoch_lines, write_run  # noqa: E402
from tui.app import DashboardApp  # noqa: E402
from tui.metrics import MetricsLog, MetricsTail  # noqa: E402
from ddpcifar.runs.reader import RunScanner  # noqa: E402
from tui.widgets.curves import CurvesPanel  # noqa: E402
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
    # A plain sleep between checks, not pilot.pause(): that walks every widget and queues a
    # callback on each, hundreds of times a second, which would load the UI thread (and the
    # GIL the metrics worker needs) far more than a user does. The app repaints on its own.
    while not check():
        await asyncio.sleep(0.005)


async def time_run_list(root: Path, expected: int) -> float:
    app = DashboardApp(root, poll_interval=1.0, clock=lambda: NOW)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(app, pilot, lambda: bool(app.screen_stack[0].query(RunTable)))
        table = app.screen_stack[0].query_one(RunTable)
        await _until(app, pilot, lambda: table.row_count == expected)
        elapsed = time.perf_counter() - start
    return elapsed


async def time_curves_in_app(root: Path, train_lines: int,
                             eval_lines: int) -> tuple[float, float, float, float, float]:
    """Seconds from app start until a first part of the loss curve is drawn and until every
    curve (train and test loss, top-1, lr) is drawn with all its points (wall, and CPU of this
    process, all threads); then the time to rasterise the three charts once, and to redraw
    them with EMA 0.99 smoothing (an EMA over every point, then decimation)."""
    app = DashboardApp(root, poll_interval=1.0, clock=lambda: NOW)
    start, cpu = time.perf_counter(), time.process_time()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(app, pilot, lambda: bool(app.screen_stack[0].query(LineChart)))
        dash = app.screen_stack[0]
        loss, top1, lr = (dash.query_one(f"#chart-{k}", LineChart) for k in ("loss", "top1", "lr"))
        await _until(app, pilot, lambda: loss.drawn and bool(loss.series)
                     and len(loss.series[0].x) > 0)
        first = time.perf_counter() - start

        def complete() -> bool:
            charts = (loss, top1, lr)
            if not all(c.drawn and c.series for c in charts):
                return False
            return (all(len(c.series[0].x) == train_lines for c in charts)
                    and all(len(c.series[1].x) == eval_lines for c in (loss, top1)))

        await _until(app, pilot, complete)
        every, every_cpu = time.perf_counter() - start, time.process_time() - cpu
        charts = list(dash.query(LineChart))
        t0 = time.perf_counter()
        for chart in charts:
            chart._render_lines(chart.size.width, chart.size.height)
        render = time.perf_counter() - t0
        t0 = time.perf_counter()
        dash.query_one(CurvesPanel).show(["long"], dash.curves, x_axis="epoch", smoothing=0.99)
        for chart in charts:
            chart._render_lines(chart.size.width, chart.size.height)
        smoothed = time.perf_counter() - t0
    return first, every, every_cpu, render, smoothed


def time_parse(path: Path) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds of this process, train points, eval points) to read and parse
    the file into curves, chunk by chunk as the dashboard's worker does.

    CPU time is reported too because other processes may share the cores: wall time includes waiting for one.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tail = MetricsTail(path)
    log = MetricsLog()
    while tail.read(into=log).more:
        pass
    curves = log.curves()
    return (time.perf_counter() - start, time.process_time() - cpu, len(curves.train_step),
            len(curves.eval_step))


def load_average() -> str:
    """1, 5 and 15-minute load averages: the benchmark shares the cores with whatever else runs."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def report(name: str, values: list[float], target: str = "") -> None:
    print(f"{name:<46} median {statistics.median(values) * 1000:8.1f} ms   "
          f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})  {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()} ({cpu_model()}), "
          f"{os.cpu_count()} CPUs, load average {load_average()}, {args.repeats} repeats")
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
        train_lines, eval_lines = parses[0][2], parses[0][3]
        report(f"read+parse {args.lines} metric lines (wall)", [p[0] for p in parses],
               "target < 2000 ms per 100k lines")
        report(f"read+parse {args.lines} metric lines (CPU)", [p[1] for p in parses])
        shown = [asyncio.run(time_curves_in_app(long_root, train_lines, eval_lines))
                 for _ in range(args.repeats)]
        report("app start -> first curve drawn", [s[0] for s in shown])
        report(f"app start -> every curve of {args.lines} lines drawn", [s[1] for s in shown],
               "target < 5000 ms for 1M lines")
        report("  the same, CPU (all threads)", [s[2] for s in shown])
        report("rasterise the 3 charts (120x40 terminal)", [s[3] for s in shown])
        report("redraw the 3 charts with EMA 0.99", [s[4] for s in shown])
    print(f"load average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
