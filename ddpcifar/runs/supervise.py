"""The supervisor of one launched run: runs its command and answers for it.

`python -m ddpcifar.runs _supervise RUN --slot-fd N` (started by the queue server, detached):
runs the command of `launch.json` in its own process group with every rank's output appended
to `run.log`, holds the queue slot it was handed, and turns signals into a stop: the first
SIGTERM (from `runs stop` or the dashboard) is passed to torchrun, which passes it to every
rank, so the trainer finishes its step, writes a checkpoint and ends as `stopped`; a second
signal, or `stop_timeout_s` without an end, kills the whole process group. When the command
ends without having said how (a crash before status.json was written, a SIGKILL), the
supervisor marks the run failed with the log's last line, then wakes the queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from ddpcifar.runs import queue, states
from ddpcifar.runs.launch import STOP_TIMEOUT_S, display, read_launch, runs_root, write_launch
from ddpcifar.runs.procs import ProcessRef
from ddpcifar.runs.reader import last_error
from ddpcifar.runs.ending import end_run
from ddpcifar.runs.rundir import LOG, read_state


class Supervisor:
    def __init__(self, run_dir: Path, slot_fd: int | None) -> None:
        self.run_dir = run_dir
        self.slot_fd = slot_fd
        self.proc: subprocess.Popen | None = None
        self.stop_signals = 0
        self.stop_deadline: float | None = None
        self.killed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signals += 1

    def run(self) -> int:
        record = read_launch(self.run_dir)
        if record is None:
            return 2
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        stop_timeout = float(record.get("stop_timeout_s") or STOP_TIMEOUT_S)
        command = record["command"]
        env = {**os.environ, **record.get("env", {})}
        with open(self.run_dir / LOG, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {display(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(command, cwd=record.get("cwd"), env=env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, process_group=0,
                                         pass_fds=(self.slot_fd,) if self.slot_fd else ())
        record["supervisor"] = ProcessRef.me().to_json()
        record["agent"] = ProcessRef.of(self.proc.pid).to_json()
        attempt = record["attempts"][-1] if record.get("attempts") else {}
        attempt["started"] = time.time()
        write_launch(self.run_dir, record)
        code = self._wait(stop_timeout)
        self._close_slot()
        record = read_launch(self.run_dir) or record
        attempt = record["attempts"][-1] if record.get("attempts") else {}
        attempt.update(ended=time.time(), exit_code=code, killed=self.killed)
        record["supervisor"] = None
        write_launch(self.run_dir, record)
        self._settle(code)
        root, _ = runs_root(self.run_dir)
        queue.ensure_server(root)
        return 0

    def _wait(self, stop_timeout: float) -> int:
        assert self.proc is not None
        handled = 0
        while True:
            try:
                return self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stop_signals > handled:
                handled = self.stop_signals
                if handled == 1:
                    self._mark_stop_requested()
                    self._signal(signal.SIGTERM)
                    self.stop_deadline = time.monotonic() + stop_timeout
                else:
                    self._kill()
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                self._kill()
                self.stop_deadline = None

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.kill(self.proc.pid, sig)  # torchrun passes it on to every rank
        except ProcessLookupError:
            pass

    def _kill(self) -> None:
        """SIGKILL torchrun's whole process group: the agent, the ranks and their workers."""
        assert self.proc is not None
        self.killed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _mark_stop_requested(self) -> None:
        record = read_launch(self.run_dir)
        if record is not None and not record.get("stop_requested"):
            record["stop_requested"] = time.time()
            write_launch(self.run_dir, record)

    def _close_slot(self) -> None:
        if self.slot_fd:
            try:
                os.close(self.slot_fd)
            except OSError:
                pass
            self.slot_fd = None

    def _settle(self, code: int) -> None:
        """Say how the run ended if the run itself could not."""
        state = read_state(self.run_dir)
        if state not in (states.RUNNING, states.QUEUED):
            return  # the trainer wrote its own end (finished, stopped, failed)
        if self.stop_signals:
            reason = ("killed: it did not stop in time; it resumes from its last checkpoint"
                      if self.killed else "stopped before training began")
            end_run(self.run_dir, states.STOPPED,
                    error=reason)
            return
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        end_run(self.run_dir, states.FAILED,
                error=f"{how}: {last_error(self.run_dir)}"[:300])


def supervise(run_dir: str | os.PathLike, slot_fd: int | None) -> int:
    return Supervisor(Path(run_dir), slot_fd).run()
