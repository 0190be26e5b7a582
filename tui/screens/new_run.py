"""The new-run form: a base spec (one of specs/, or a run's own for a clone), the common fields,
free `--set` overrides, the run spec's own validation under each field as you type, and the
exact command. Start stays disabled until the spec validates (tui/run_form.py has the logic)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from ddpcifar.errors import UserError
from tui.run_form import (FIELDS, FREE, FormCheck, Source, check_form, free_name, initial_values,
                          read_base)


@dataclass(frozen=True)
class NewRun:
    """What the form asks for: launch `source` with `overrides` on `nproc` ranks."""

    source: Source
    overrides: list[str]
    nproc: int
    command: str


class NewRunScreen(ModalScreen[NewRun | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("ctrl+s", "start", "start")]

    def __init__(self, sources: list[Source], initial: Source, *, runs_dir: Path, cwd: Path,
                 name: str | None = None, nproc: int = 1) -> None:
        super().__init__()
        self.sources = sources if initial in sources else [initial, *sources]
        self.source = initial
        self.runs_dir, self.cwd = runs_dir, cwd
        self.start_name, self.start_nproc = name, nproc
        self.base: dict = {}
        self.check = FormCheck()
        self._filling = False

    def compose(self) -> ComposeResult:
        title = (f"Clone {self.source.run_dir.name}" if self.source.clone and self.source.run_dir
                 else "New run")
        with VerticalScroll(id="form-box"):
            yield Static(title, id="form-title")
            with Horizontal(classes="form-row", id="source-row"):
                yield Label("spec", classes="form-label")
                yield Select([(s.label, i) for i, s in enumerate(self.sources)],
                             value=self.sources.index(self.source), allow_blank=False,
                             id="form-source", disabled=self.source.clone)
            for f in (*FIELDS, None):
                key = f.key if f else FREE
                with Horizontal(classes="form-row"):
                    yield Label(f.label if f else "--set", classes="form-label")
                    yield Input(id=f"field-{key}", placeholder=(f.path or "") if f else
                                "section.key=value ... (space separated)")
                yield Static("", id=f"error-{key}", classes="field-error")
            yield Static("", id="form-command")
            with Horizontal(id="form-buttons"):
                yield Button("start [ctrl+s]", variant="success", id="form-start", disabled=True)
                yield Button("cancel [esc]", id="form-cancel")

    def on_mount(self) -> None:
        self._load(self.source, name=self.start_name, nproc=self.start_nproc)
        self.query_one("#field-name", Input).focus()

    def _load(self, source: Source, *, name: str | None = None, nproc: int = 1) -> None:
        self.source = source
        try:
            self.base = read_base(source)
        except UserError as err:
            self.base = {}
            self.query_one("#error-overrides", Static).update(str(err))
            return
        values = initial_values(self.base, name=name, nproc=nproc)
        if name is None and values.get("name"):  # a new run gets a name no run has yet
            values["name"] = free_name(self.runs_dir, values["name"])
        self._filling = True
        for key, value in values.items():
            self.query_one(f"#field-{key}", Input).value = value
        self._filling = False
        self.revalidate()

    def values(self) -> dict[str, str]:
        keys = [f.key for f in FIELDS] + [FREE]
        return {k: self.query_one(f"#field-{k}", Input).value for k in keys}

    def revalidate(self) -> FormCheck:
        self.check = check_form(self.source, self.base, self.values(), runs_dir=self.runs_dir,
                                cwd=self.cwd)
        for key in [f.key for f in FIELDS] + [FREE]:
            error = self.check.errors.get(key, "")
            self.query_one(f"#error-{key}", Static).update(f"✗ {error}" if error else "")
            self.query_one(f"#field-{key}", Input).set_class(bool(error), "invalid")
        self.query_one("#form-command", Static).update(
            ("$ " + self.check.command) if self.check.ok else "fix the fields marked ✗ to start")
        self.query_one("#form-start", Button).disabled = not self.check.ok
        return self.check

    @on(Input.Changed)
    def _changed(self) -> None:
        if not self._filling:
            self.revalidate()

    @on(Select.Changed, "#form-source")
    def _source_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, int) and self.sources[event.value] != self.source:
            self._load(self.sources[event.value], nproc=self.check.nproc)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#form-start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#form-cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def action_start(self) -> None:
        if self.revalidate().ok:
            self.dismiss(NewRun(self.source, list(self.check.overrides), self.check.nproc,
                                self.check.command))
        else:
            self.notify("the spec does not validate yet: see the fields marked ✗",
                        severity="warning", title="not started")

    def action_cancel(self) -> None:
        self.dismiss(None)
