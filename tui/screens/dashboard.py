"""The main screen: run list on top, tabs (curves, samples, classes, details, log, card) below,
and the run actions: new run, stop, resume, clone, tags, queue order.

All file reading happens in thread workers (`_poll_loop`, `_load_samples`, `_load_details`,
CardPanel's) that only post typed messages; the handlers here just route data to widgets.
Actions go through ddpcifar.runs (the same code as `python -m ddpcifar.runs`), also in thread
workers, and report one line each.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (DataTable, Footer, Input, Label, Log, Static, TabbedContent,
                             TabPane)
from textual.worker import get_current_worker

from ddpcifar.errors import UserError
from ddpcifar.runs import control, queue, states
from ddpcifar.runs.control import Stopping
from ddpcifar.runs.launch import Launched, launch, runs_root
from ddpcifar.runs.reader import log_tail
from tui.messages import (ActionDone, DetailsLoaded, LogUpdated, MetricsUpdated, ReadProblem,
                          RunsScanned, SampleEpochsListed, SamplesLoaded)
from tui.run_form import Source, spec_argument, spec_sources
from tui.sweeps import sweep_dirs
from tui.screens.confirm import ConfirmScreen
from tui.screens.new_run import NewRun, NewRunScreen
from tui.screens.prompt import TextPromptScreen
from tui.screens.choice import ChoiceScreen
from tui.screens.sweep import SweepScreen
from tui.metrics import Curves, latest_evaluation
from ddpcifar.runs.reader import RunInfo, read_json_text
from tui.samples import SamplesError, load_samples
from tui.screens.image_screen import ImageScreen
from tui.watcher import RunWatcher
from tui.widgets.class_bars import ClassBars
from tui.widgets.confusion import ConfusionGrid
from tui.widgets.card import CardPanel
from tui.widgets.curves import SMOOTHING_STEPS, CurvesPanel
from tui.widgets.details import DetailsPanel
from tui.widgets.run_table import RunTable
from tui.widgets.sample_grid import SampleGrid


SORT_CHOICES = [(k, f"{k:<20} {d}") for k, d in (
    ("name", "run name"), ("model", "model"), ("state", "state"), ("epoch", "epochs done"),
    ("queue", "queue position"), ("best_top1", "best test top-1"),
    ("last_top1", "latest test top-1"), ("top1_tta", "top-1 with test-time augmentation"),
    ("val_top1", "validation top-1"), ("images_per_s", "training images/s"),
    ("elapsed_s", "elapsed time"), ("final_loss", "final test loss"),
    ("final_top1", "final test top-1"), ("final_top5", "final test top-5"),
    ("wall_time_s", "wall time"), ("train_time_s", "training time"),
    ("time_to_accuracy_s", "time to accuracy (airbench's)"))]


class DashboardScreen(Screen[None]):
    """Everything about the runs in one runs directory."""

    BINDINGS = [
        Binding("slash", "focus_filter", "filter"),
        Binding("escape", "focus_runs", "runs", show=False),
        Binding("o", "sort", "sort"),
        Binding("O", "reverse_sort", "reverse", show=False),
        Binding("c", "compare", "compare"),
        Binding("x", "x_axis", "epoch/step"),
        Binding("s", "smoothing(1)", "smooth"),
        Binding("S", "smoothing(-1)", "less smooth", show=False),
        Binding("1", "tab('curves')", "curves", show=False),
        Binding("2", "tab('samples')", "samples", show=False),
        Binding("3", "tab('classes')", "classes", show=False),
        Binding("4", "tab('details')", "details", show=False),
        Binding("5,l", "tab('log')", "log", show=False),
        Binding("6", "tab('card')", "card", show=False),
        Binding("n", "new_run", "new run"),
        Binding("k", "stop", "stop"),
        Binding("r", "resume", "resume"),
        Binding("C", "clone", "clone"),
        Binding("e", "tags", "tags", show=False),
        Binding("m", "sort_metric", "sort by…", show=False),
        Binding("w", "sweep", "sweep"),
        Binding("plus", "queue_move(-1)", "queue up", show=False),
        Binding("minus", "queue_move(1)", "queue down", show=False),
    ]

    def __init__(self, runs_dir: Path, poll_interval: float, clock: Callable[[], float], *,
                 specs_dir: Path = Path("specs"), cwd: Path | None = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.specs_dir = specs_dir
        self.cwd = (cwd or Path.cwd()).resolve()
        self._select_next: str | None = None  # a run just launched: select it once listed
        self.poll_interval = poll_interval
        self.watcher = RunWatcher(runs_dir, clock)
        self.runs: dict[str, RunInfo] = {}
        self.curves: dict[str, Curves | None] = {}
        self.curve_notes: dict[str, str | None] = {}
        self.summaries: dict[str, dict | None] = {}
        self.sample_epochs: dict[str, list[int]] = {}
        self.chosen_epoch: dict[str, int] = {}  # absent: follow the latest evaluation
        self.selected: str | None = None
        self.compare = False
        self.x_axis = "epoch"
        self.smoothing = 0.0
        self._loaded_samples: tuple[str, int] | None = None
        self._watched: tuple[str, ...] = ()
        self._wake = threading.Event()
        self._notified: set[str] = set()

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-area"):
            with Horizontal(id="filter-bar"):
                yield Label("filter ", id="filter-label")
                yield Input(placeholder="name, state:running, model:era_s9, tag:x, optimizer.lr>0.01"
                                        "  (/ to focus, esc to leave)", id="filter")
                yield Static("", id="sort-label")
            yield RunTable(id="runs")
        with TabbedContent(id="tabs", initial="curves"):
            with TabPane("Curves [1]", id="curves"):
                yield CurvesPanel(id="curves-panel")
            with TabPane("Samples [2]", id="samples"):
                yield SampleGrid(id="grid")
            with TabPane("Classes [3]", id="classes"):
                yield Static("", id="eval-title")
                with Horizontal(id="class-charts"):
                    yield ClassBars(id="bars")
                    yield ConfusionGrid(id="confusion")
            with TabPane("Details [4]", id="details"):
                yield DetailsPanel(id="details-panel")
            with TabPane("Log [5]", id="log"):
                yield Static("", id="log-title")
                yield Log(id="run-log", max_lines=5000)
            with TabPane("Card [6]", id="card"):
                yield CardPanel(id="card-panel")
        yield Static("", id="notice")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#bars").border_title = "per-class top-1"
        self.query_one("#confusion").border_title = "confusion matrix"
        self._show_sort()
        self.query_one(RunTable).focus()
        self._redraw_curves()
        self._poll_loop()

    def on_unmount(self) -> None:
        self._wake.set()  # let the poll thread notice cancellation at once

    # -- the worker ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll")
    def _poll_loop(self) -> None:
        """Poll the runs directory until the screen goes away; only posts messages."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                for message in self.watcher.poll(self._watched):
                    if worker.is_cancelled:
                        return
                    self.post_message(message)
            except Exception as err:  # noqa: BLE001 - a poll must never kill the dashboard
                self.post_message(ReadProblem(f"polling {self.runs_dir} failed: {err!r}"[:200]))
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    @work(thread=True, exclusive=True, group="samples")
    def _load_samples(self, run: str, epoch: int) -> None:
        try:
            samples = load_samples(self.runs_dir / run, epoch)
        except SamplesError as err:
            self.post_message(SamplesLoaded(run, epoch, None, str(err)))
            return
        self.post_message(SamplesLoaded(run, epoch, samples))

    @work(thread=True, exclusive=True, group="details")
    def _load_details(self, run: str) -> None:
        spec, p1 = read_json_text(self.runs_dir / run / "spec.json")
        summary_text, p2 = read_json_text(self.runs_dir / run / "summary.json")
        summary = None
        if summary_text is not None and p2 is None:
            parsed = json.loads(summary_text)
            summary = parsed if isinstance(parsed, dict) else None
        problems = [f"{run}/{p}" for p in (p1, p2) if p]
        self.post_message(DetailsLoaded(run, spec, summary_text, summary, problems))

    def _set_watched(self) -> None:
        runs = self._shown_runs()
        self._watched = tuple(runs)
        self._wake.set()

    # -- message handlers ------------------------------------------------------------------

    def on_runs_scanned(self, message: RunsScanned) -> None:
        old = self.runs.get(self.selected) if self.selected else None
        self.runs = {r.name: r for r in message.runs}
        table = self.query_one(RunTable)
        table.set_runs(message.runs)
        if self._select_next in self.runs and self._select_next in table.visible_names:
            table.move_cursor(row=table.visible_names.index(self._select_next))
            self._select_next = None
            self._select(table.selected)
        elif self.selected is None or self.selected not in self.runs:
            self._select(table.selected)
        elif old is not None and (old.state, old.epoch) != (self.runs[self.selected].state,
                                                            self.runs[self.selected].epoch):
            self._load_details(self.selected)  # summary.json may have appeared
            self._show_card()  # so may the model card
            self._redraw_curves()  # the note above the curves follows the state

    def on_log_updated(self, message: LogUpdated) -> None:
        if message.run != self.selected:
            return
        log = self.query_one("#run-log", Log)
        if message.reset:
            log.clear()
            self.query_one("#log-title", Static).update(
                f"{message.run}/run.log: no log (runs started by `python -m ddpcifar.runs` or "
                "the dashboard keep every rank's output there)" if message.missing
                else f"{message.run}/run.log (every rank's stdout and stderr, followed live)")
        if message.lines:
            log.write_lines(message.lines)

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.line, title="error" if message.error else "done",
                    severity="error" if message.error else "information",
                    timeout=8 if message.error else 5)
        if message.run and not message.error:
            self._select_next = message.run
        self._wake.set()

    def on_metrics_updated(self, message: MetricsUpdated) -> None:
        self.curves[message.run] = message.curves
        self.curve_notes[message.run] = message.note
        if message.run in self._shown_runs():
            self._redraw_curves()
        if message.run == self.selected:
            self._redraw_evaluation()

    def on_sample_epochs_listed(self, message: SampleEpochsListed) -> None:
        self.sample_epochs[message.run] = message.epochs
        if message.run == self.selected:
            self._request_samples()

    def on_samples_loaded(self, message: SamplesLoaded) -> None:
        if (message.run, message.epoch) != self._loaded_samples:
            return  # a load that was overtaken by another selection
        grid = self.query_one(SampleGrid)
        classes = self.runs[message.run].classes if message.run in self.runs else ()
        epochs = self.sample_epochs.get(message.run, [])
        if message.error:
            grid.set_samples(None, classes, epochs, message=f"⚠ {message.error}")
            self._problem(f"{message.run}/{message.error}")
        else:
            grid.set_samples(message.samples, classes, epochs)

    def on_details_loaded(self, message: DetailsLoaded) -> None:
        self.summaries[message.run] = message.summary
        for problem in message.problems:
            self._problem(problem)
        if message.run == self.selected:
            self.query_one(DetailsPanel).show(message.spec_text, message.summary_text)
            self._redraw_evaluation()

    def on_read_problem(self, message: ReadProblem) -> None:
        self._problem(message.text)

    def _problem(self, text: str) -> None:
        """Show a reading problem in the notice line; pop a toast only the first time."""
        self.query_one("#notice", Static).update(f"⚠ {text}")
        if text not in self._notified:
            self._notified.add(text)
            self.notify(text, title="could not read", severity="warning", timeout=6)

    @on(DataTable.RowHighlighted, "#runs")
    def _row_highlighted(self) -> None:
        self._select(self.query_one(RunTable).selected)

    @on(RunTable.MarksChanged)
    def _marks_changed(self) -> None:
        self._set_watched()
        self._redraw_curves()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        table = self.query_one(RunTable)
        table.set_filter(event.value)
        if table.filter_error:
            self.query_one("#notice", Static).update(f"⚠ filter: {table.filter_error}")

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(RunTable).focus()

    @on(SampleGrid.Enlarge)
    def _enlarge(self, event: SampleGrid.Enlarge) -> None:
        classes = self.runs[self.selected].classes if self.selected in self.runs else ()
        self.app.push_screen(ImageScreen(event.samples, event.order, event.position, classes))

    @on(SampleGrid.EpochStep)
    def _epoch_step(self, event: SampleGrid.EpochStep) -> None:
        run = self.selected
        epochs = self.sample_epochs.get(run or "", [])
        if run is None or not epochs:
            return
        current = self.chosen_epoch.get(run, epochs[-1])
        pos = epochs.index(current) if current in epochs else len(epochs) - 1
        pos = max(0, min(len(epochs) - 1, pos + event.delta))
        if pos == len(epochs) - 1:
            self.chosen_epoch.pop(run, None)  # back to following the newest evaluation
        else:
            self.chosen_epoch[run] = epochs[pos]
        self._request_samples()

    # -- selection and redraws -------------------------------------------------------------

    def _select(self, name: str | None) -> None:
        if name == self.selected:
            return
        self.selected = name
        self._loaded_samples = None
        self._set_watched()
        self._redraw_curves()
        self._redraw_evaluation()
        self._show_card()
        grid = self.query_one(SampleGrid)
        if name is None:
            grid.set_samples(None, (), message="no run selected")
            return
        grid.set_samples(None, (), message="loading samples…")
        self._request_samples()
        self._load_details(name)

    def _show_card(self) -> None:
        """Load the selected run's model card, only while its tab shows (markdown takes a moment
        to lay out, too long to redo at every step through the run list)."""
        if self.query_one(TabbedContent).active != "card":
            return
        info = self.runs.get(self.selected) if self.selected else None
        self.query_one(CardPanel).show(self.selected, info.path if info else None)

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "card":
            self._show_card()  # also picks up a card written since (python -m ddpcifar.card)

    def _shown_runs(self) -> list[str]:
        """The selected run, plus the marked ones in compare mode (in table order)."""
        if self.selected is None:
            return []
        if not self.compare:
            return [self.selected]
        table = self.query_one(RunTable)
        marked = [n for n in table.visible_names if n in table.marked or n == self.selected]
        return marked or [self.selected]

    def _redraw_curves(self) -> None:
        runs = self._shown_runs()
        note = self.curve_notes.get(runs[0]) if len(runs) == 1 else None
        info = self.runs.get(runs[0]) if len(runs) == 1 else None
        if note is None and info is not None and info.state == "failed" and info.error:
            note = f"{info.name} failed: {info.error}"
        elif info is not None and info.state == states.LOST:
            tail = log_tail(info.path, 3)
            note = (f"{info.name} is lost: its processes are gone without a word; "
                    + (f"its log ends: {' ⏎ '.join(tail)}" if tail else "it left no log")
                    + " (r resumes it)")
        elif info is not None and info.state == states.STOPPED and info.error:
            note = f"{info.name} stopped: {info.error}"
        self.query_one(CurvesPanel).show(runs, self.curves, x_axis=self.x_axis,
                                         smoothing=self.smoothing, note=note)

    def _redraw_evaluation(self) -> None:
        run = self.selected
        curves = self.curves.get(run) if run else None
        evaluation = latest_evaluation(curves.last_eval if curves else None,
                                       self.summaries.get(run) if run else None)
        classes = self.runs[run].classes if run in self.runs else ()
        title = self.query_one("#eval-title", Static)
        if evaluation is None:
            title.update("no evaluation yet")
            self.query_one(ClassBars).show(classes, [])
            self.query_one(ConfusionGrid).show(classes, [])
            return
        top1 = f" · top-1 {evaluation.top1 * 100:.2f}%" if evaluation.top1 is not None else ""
        if evaluation.top1_tta is not None:
            top1 += f" · with TTA {evaluation.top1_tta * 100:.2f}%"
        title.update(f"{run} · evaluation after epoch {evaluation.epoch} "
                     f"(from {evaluation.source}){top1}")
        self.query_one(ClassBars).show(classes, evaluation.per_class)
        self.query_one(ConfusionGrid).show(classes, evaluation.confusion)

    def _request_samples(self) -> None:
        run = self.selected
        epochs = self.sample_epochs.get(run or "")
        if run is None or epochs is None:
            return
        grid = self.query_one(SampleGrid)
        if not epochs:
            grid.set_samples(None, (), message="no samples yet (written after each evaluation)")
            return
        epoch = self.chosen_epoch.get(run, epochs[-1])
        if self._loaded_samples != (run, epoch):
            self._loaded_samples = (run, epoch)
            self._load_samples(run, epoch)

    def _show_sort(self) -> None:
        table = self.query_one(RunTable)
        arrow = "▼" if table.sort_reverse else "▲"
        self.query_one("#sort-label", Static).update(
            f"sort: {table.sort_label} {arrow}  (o / O / m)")

    # -- actions ---------------------------------------------------------------------------

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_runs(self) -> None:
        self.query_one(RunTable).focus()

    def action_sort(self) -> None:
        self.query_one(RunTable).cycle_sort()
        self._show_sort()

    def action_reverse_sort(self) -> None:
        self.query_one(RunTable).reverse_sort()
        self._show_sort()

    def action_compare(self) -> None:
        self.compare = not self.compare
        if self.compare and not self.query_one(RunTable).marked:
            self.notify("mark runs with space to overlay them", title="compare")
        self._set_watched()
        self._redraw_curves()

    def action_x_axis(self) -> None:
        self.x_axis = "step" if self.x_axis == "epoch" else "epoch"
        self._redraw_curves()

    def action_smoothing(self, delta: int) -> None:
        i = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[max(0, min(len(SMOOTHING_STEPS) - 1, i + delta))]
        self._redraw_curves()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "samples":
            self.query_one(SampleGrid).focus()

    # -- run actions (through ddpcifar.runs, in thread workers) -----------------------------

    @work(thread=True, group="actions")
    def _act(self, verb: str, action: Callable[[], object], run: str | None = None) -> None:
        """Run a lifecycle action off the UI thread; post its one line."""
        try:
            result = action()
        except UserError as err:
            self.post_message(ActionDone(f"{verb}: {err}", error=True))
            return
        except OSError as err:
            self.post_message(ActionDone(f"{verb}: {err}", error=True))
            return
        if isinstance(result, Launched):
            self.post_message(ActionDone(result.line(verb), run=result.name))
        elif isinstance(result, Stopping):
            self.post_message(ActionDone(result.line(), run=result.info.name))
        else:
            self.post_message(ActionDone(str(result), run=run))

    def _selected_info(self, action: str):  # -> RunInfo | None
        info = self.runs.get(self.selected) if self.selected else None
        if info is None:
            self.notify(f"select a run to {action}", severity="warning")
        return info

    def action_new_run(self) -> None:
        sources = spec_sources(self.specs_dir)
        info = self.runs.get(self.selected) if self.selected else None
        if info is not None and (info.path / "spec.json").exists():
            sources.append(Source(info.path / "spec.json", f"run: {info.name}"))
        if not sources:
            self.notify(f"no specs in {self.specs_dir} and no run selected", severity="warning")
            return
        self.app.push_screen(NewRunScreen(sources, sources[0], runs_dir=self.runs_dir,
                                          cwd=self.cwd), self._launch_form)

    def _launch_form(self, form: NewRun | None) -> None:
        if form is None:
            return
        if form.source.clone and form.source.run_dir is not None:
            run_dir = form.source.run_dir
            self._act("cloned into", lambda: control.clone(run_dir, form.overrides,
                                                           nproc=form.nproc))
        else:
            spec = spec_argument(form.source, self.cwd)
            self._act("launched", lambda: launch(spec, form.overrides, nproc=form.nproc,
                                                 cwd=self.cwd))

    def action_clone(self) -> None:
        info = self._selected_info("clone")
        if info is None:
            return
        cwd = control.launch_cwd(info)
        source = Source(info.path / "spec.json", f"run: {info.name}", run_dir=info.path, cwd=cwd)
        root, _ = runs_root(info.path)
        self.app.push_screen(NewRunScreen([source], source, runs_dir=self.runs_dir, cwd=self.cwd,
                                          name=control.next_free_name(root, info.path.name),
                                          nproc=info.world_size or 1), self._launch_form)

    def action_stop(self) -> None:
        info = self._selected_info("stop")
        if info is None:
            return
        if info.state == states.QUEUED:
            title, body, verb = (f"Cancel {info.name}?", "It leaves the queue and becomes "
                                 "stopped; resume queues it again.", "cancel it")
        elif info.state == states.RUNNING:
            launch_rec = (info.path / "launch.json").exists()
            title, body, verb = (f"Stop {info.name}?", "It finishes its current step, writes a "
                                 "checkpoint and ends as stopped; resume continues it. Stopping "
                                 "a run that is already stopping kills it at once."
                                 + ("" if launch_rec else " (started by hand: its torchrun "
                                    "or rank 0 gets SIGTERM)"), "stop it")
        else:
            self._act("stop", lambda: control.stop(info.path))  # refused with its reason
            return
        self.app.push_screen(ConfirmScreen(title, body, verb),
                             lambda yes: yes and self._act("stop", lambda: control.stop(info.path),
                                                           info.name))

    def action_resume(self) -> None:
        info = self._selected_info("resume")
        if info is None:
            return
        if info.state not in states.ACCEPTS["resume"]:
            self._act("resumed", lambda: control.resume(info.path))  # refused with its reason
            return
        self.app.push_screen(
            ConfirmScreen(f"Resume {info.name}?", f"It is {info.state} at epoch {info.epoch}/"
                          f"{info.epochs}. It is queued and continues from its last checkpoint.",
                          "resume it"),
            lambda yes: yes and self._act("resumed", lambda: control.resume(info.path), info.name))

    def action_tags(self) -> None:
        info = self._selected_info("tag")
        if info is None:
            return

        def retag(tags: list[str]) -> str:
            kept = control.tag(info.path, tags, [t for t in info.tags if t not in tags])
            return f"{info.name}: tags {', '.join(kept) or '(none)'}"

        def done(text: str | None) -> None:
            if text is not None:
                tags = text.replace(",", " ").split()
                self._act("tagged", lambda: retag(tags), info.name)

        self.app.push_screen(TextPromptScreen(f"Tags of {info.name}", "space-separated tags",
                                              " ".join(info.tags)), done)

    def action_sort_metric(self) -> None:
        table = self.query_one(RunTable)

        def chosen(key: str | None) -> None:
            if key:
                table.sort_by_metric(key)
                self._show_sort()

        self.app.push_screen(ChoiceScreen("sort runs by (missing values last)", SORT_CHOICES,
                                          table.sort_key), chosen)

    def action_queue_move(self, delta: int) -> None:
        info = self._selected_info("move in the queue")
        if info is None or info.queue_position is None:
            if info is not None:
                self.notify(f"{info.name} is not waiting in the queue", severity="warning")
            return
        root, name = runs_root(info.path)
        target = max(1, info.queue_position + delta)
        self._act("queue", lambda: f"{name}: queue position {queue.move(root, name, target)}",
                  info.name)

    def action_sweep(self) -> None:
        """The sweep of the selected trial; else pick one of the runs directory's sweeps."""
        info = self.runs.get(self.selected) if self.selected else None
        if info is not None and info.sweep is not None:
            self._open_sweep(info.sweep)
            return
        sweeps = [p.name for p in sweep_dirs(self.runs_dir)]
        if not sweeps:
            self.notify(f"no sweep in {self.runs_dir} (python -m ddpcifar.sweep run SWEEP.json)",
                        severity="warning")
        elif len(sweeps) == 1:
            self._open_sweep(sweeps[0])
        else:
            self.app.push_screen(ChoiceScreen("open a sweep", [(s, s) for s in sweeps]),
                                 lambda name: name and self._open_sweep(name))

    def _open_sweep(self, name: str) -> None:
        def opened(run: str | None) -> None:
            if run:
                self._select_next = run
                self._wake.set()

        self.app.push_screen(SweepScreen(self.runs_dir / name, self.poll_interval), opened)
