"""The training loop: `Trainer(spec, env).fit()` trains, evaluates, logs and checkpoints.

Everything rank-dependent is decided in `__init__`: rank 0 gets a real run directory,
TensorBoard writer and progress bar, the other ranks null ones with the same methods. Collectives
(metric reductions, sample gathering) therefore run on every rank, never inside a rank guard.
The model is built and wrapped by ddpcifar.engine.wrap; what a checkpoint holds, and how a
resume checks and restores it, is ddpcifar.engine.state; what a run reports (evaluations, the
best one, summary.json, how it ended) is ddpcifar.runs.report, shared with the NumPy engine.
SIGTERM or Ctrl-C on any rank stops every rank after the same step, with a checkpoint.
"""

from __future__ import annotations

import math
import platform
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddpcifar.data.beton import read_split
from ddpcifar.data.loaders import build_loader
from ddpcifar.data.meta import load_meta
from ddpcifar.data.orders import part_positions, subset_positions, validation_record
from ddpcifar.engine.averaging import WeightAverage
from ddpcifar.engine.checkpoint import rotate_and_save, save_checkpoint
from ddpcifar.engine.device import configure_backends
from ddpcifar.engine.distributed import DistEnv, StopVote, all_reduce_sum, as_peer_timeout
from ddpcifar.engine.evaluation import evaluate
from ddpcifar.engine.optim import ParamRoles, TrainOptimizer
from ddpcifar.engine.state import gather_state, load_resume_state, restore_state
from ddpcifar.engine.tensorboard import NullTensorBoard, TensorBoardSink
from ddpcifar.engine.wrap import (WrappedModel, broadcast_buffers, build_on_device, resolve_amp,
                                  warm_up, wrap_model)
from ddpcifar.metrics import EvalResult, RunningSums
from ddpcifar.models.inspect import count_parameters
from ddpcifar.models.whitening import init_whitening
from ddpcifar.progress import NullProgress, TrainingProgress
from ddpcifar.runs import states
from ddpcifar.runs.report import Reporter, one_line
from ddpcifar.runs.rundir import IndexLog, NullIndexLog, NullRunDir, RunDir, WriteFailed
from ddpcifar.runs.stopping import StopNow, StopRequest
from ddpcifar.spec import RunSpec


class _StopRequested(Exception):
    """Every rank agreed to stop after the current step (its checkpoint is written)."""


class Trainer:
    def __init__(self, spec: RunSpec, env: DistEnv, *, resume: bool = False,
                 evaluate_again: bool = True) -> None:
        """`evaluate_again`: a resume after the final epoch evaluates once more (a finished run
        resumed on purpose); False when an interrupted attempt had already logged and saved the
        final evaluation, so it is not logged twice."""
        self.spec, self.env = spec, env
        self.evaluate_again = evaluate_again
        self.meta = load_meta(spec.data.dir, verify_sha256=True)
        self.classes = list(self.meta.classes)
        configure_backends(env.device, spec.train.deterministic)  # determinism, TF32, cudnn autotune
        # The same seed on every rank gives identical initial weights (DDP broadcasts rank 0's
        # anyway); data order and augmentation use their own generators, not this one.
        torch.manual_seed(spec.train.seed)
        self.model = build_on_device(spec.model.name, num_classes=len(self.classes),
                                     batchnorm=spec.model.batchnorm, device=env.device,
                                     channels_last=spec.model.channels_last)
        self.timing = {"whitening_s": 0.0, "train_s": 0.0, "final_eval_s": 0.0}
        roles = ParamRoles()
        if spec.model.whitening is not None:
            # Before DDP: its frozen weight must not be registered for gradient reduction.
            roles = ParamRoles(whitening_bias=self._init_whitening())
        nets = wrap_model(self.model, env, compile_mode=spec.model.compile_mode)
        self.net, self.eval_net = nets.train, nets.eval
        self.amp_dtype = resolve_amp(spec.train.amp, env.device)
        self.scaler = torch.amp.GradScaler(env.device.type,
                                           enabled=self.amp_dtype is torch.float16)

        # Derived numbers, computed once (and checked by the spec's cross-field validation).
        self.rank_batch = spec.train.global_batch_size // env.world_size
        self.micro_batch = min(spec.train.micro_batch_size or self.rank_batch, self.rank_batch)
        # Micro-batches but the last skip DDP's gradient reduction (`no_sync`). A compiled DDP
        # module is reached through `_orig_mod`.
        self.ddp = getattr(self.net, "_orig_mod", self.net)
        if not isinstance(self.ddp, DistributedDataParallel):
            self.ddp = None
        common = dict(rank=env.rank, world_size=env.world_size, seed=spec.train.seed,
                      device=env.device, mean=self.meta.mean, std=self.meta.std,
                      channels_last=spec.model.channels_last)
        self.train_loader = build_loader(spec.data, spec.augment, split="train",
                                         batch_size=self.rank_batch, train=True, **common)
        self.test_loader = build_loader(spec.data, spec.augment, split="test",
                                        batch_size=spec.eval.batch_size // env.world_size,
                                        train=False, **common)
        # The validation split (data.val_size), held out of the train split: the train loader
        # skips it, and it is evaluated beside the test split; best.pt then follows it.
        self.val_loader = (build_loader(spec.data, spec.augment, split="val",
                                        batch_size=spec.eval.batch_size // env.world_size,
                                        train=False, **common)
                           if spec.data.val_size else None)
        self.steps_per_epoch = len(self.train_loader)  # > 0: build_loader refuses a tiny split
        # A fractional epoch count stops inside the last epoch, the step count rounded up.
        self.total_steps = math.ceil(self.steps_per_epoch * spec.train.epochs - 1e-9)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        whitening = spec.model.whitening
        self.optimizer = TrainOptimizer(
            self.model, spec.optimizer, spec.schedule, steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps, global_batch=spec.train.global_batch_size,
            loss_reduction=spec.train.loss_reduction, roles=roles,
            whitening_bias_lr_scale=whitening.bias_lr_scale if whitening else 1.0,
            whitening_bias_steps=(math.ceil(whitening.bias_epochs * self.steps_per_epoch - 1e-9)
                                  if whitening else None),
            whitening_bias_decay=whitening.bias_decay if whitening else False)
        self.averaging = (WeightAverage(self.model, spec.train.averaging, self.total_steps,
                                        self.steps_per_epoch)
                          if spec.train.averaging.kind != "none" else None)
        self.parameters = count_parameters(self.model)

        # Read and check the checkpoint before the run directory is touched: a resume that
        # cannot work must leave the run exactly as it was.
        resume_from = (load_resume_state(spec, env, self.model,
                                         steps_per_epoch=self.steps_per_epoch)
                       if resume else None)
        run_args = dict(name=spec.logging.run_name, model=spec.model.name, engine="torch",
                        epochs=self.num_epochs, world_size=env.world_size, classes=self.classes)
        self.run = (RunDir(spec.run_dir, resume=resume, **run_args) if env.is_main
                    else NullRunDir(spec.run_dir))
        self.indices = (IndexLog(spec.run_dir, env.rank, tidy=env.is_main,
                                 keep_to=resume_from[0]["step"] if resume_from else 0)
                        if spec.logging.sample_indices else NullIndexLog())
        # What the model card needs even when the run fails before its summary.
        self.run.write_status(parameters=self.parameters, **device_fields(env))
        purge = resume_from[0]["step"] + 1 if resume_from is not None else None
        self.tb = (TensorBoardSink(spec.run_dir / "tb", purge_step=purge)
                   if env.is_main and spec.logging.tensorboard else NullTensorBoard())
        self.console = (TrainingProgress(epochs=self.num_epochs, steps_per_epoch=self.steps_per_epoch)
                        if env.is_main and spec.logging.progress else NullProgress())

        self.reporter = Reporter(self.run, max_samples=spec.eval.max_samples,
                                 sample_images=self._test_images_at)
        self.stop = StopRequest()
        self.stop_vote = StopVote(env)
        self.epoch = 0  # epochs completed
        self.step = 0
        self.epoch_rates: list[float] = []
        # This rank's (window, total) sums of a mid-epoch checkpoint, for the epoch it resumes.
        self._partial: list[list[float]] | None = None
        self._test_images: np.ndarray | None = None
        if spec.data.val_size:
            self.run.write_validation(validation_record(read_split(spec.data.dir, "train")[1],
                                                        spec.data))
        if resume_from is not None:
            self._resume(*resume_from)
        else:
            # A fresh start can still find lines from an elastic attempt that died before its
            # first checkpoint; they describe a trajectory that is being replaced.
            self.run.truncate_metrics(0)
            self.run.write_spec(spec.resolved())
        self.console.message(
            f"[bold]{spec.logging.run_name}[/]: {spec.model.name} ({self.parameters:,} parameters), "
            f"world size {env.world_size} on {env.device} ({env.backend}), global batch "
            f"{spec.train.global_batch_size} = {env.world_size} x {self.rank_batch}"
            f"{f' in micro-batches of {self.micro_batch}' if self.micro_batch < self.rank_batch else ''}, "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps, amp {self.amp_dtype}, "
            f"loader {spec.data.loader}")

    def _init_whitening(self) -> nn.Parameter:
        """Set the model's stem from `samples` training images (the same on every rank)."""
        cfg = self.spec.model.whitening
        assert cfg is not None
        images, labels = read_split(self.spec.data.dir, "train")
        if self.spec.data.val_size:  # never look at the validation images, not even here
            data = self.spec.data
            images = images[part_positions(labels, part="train", max_samples=data.max_samples,
                                           val_size=data.val_size, val_seed=data.val_seed)]
        # Evenly spaced, not the first N: a split written class by class would give one class.
        picked = subset_positions(len(images), cfg.samples)
        first = torch.from_numpy(images if picked is None else images[picked])
        first = first.to(self.env.device).permute(0, 3, 1, 2)
        mean = torch.tensor(self.meta.mean, device=self.env.device).view(1, 3, 1, 1)
        std = torch.tensor(self.meta.std, device=self.env.device).view(1, 3, 1, 1)
        t0 = time.perf_counter()  # airbench times the whitening itself, not reading the data
        stem = init_whitening(self.model, (first.float() - mean) / std, cfg.eps)
        self.timing["whitening_s"] = time.perf_counter() - t0
        return stem.bias

    # ---------------------------------------------------------------- training

    def fit(self) -> dict[str, Any]:
        """Train to the last epoch, or until a stop request; mark the run failed (and re-raise)
        on any error."""
        try:
            with self.stop:
                return self._fit()
        except _StopRequested:
            return self._stopped()
        except StopNow as err:
            self.reporter.end(states.STOPPED, f"interrupted by a {err} before a checkpoint; "
                                              "resume continues from the last one")
            raise
        except WriteFailed as err:
            # A full disk: status.json says so (in place if it must), but no model card is
            # drawn onto the disk that is full.
            self.run.finish(states.FAILED, str(err))
            raise
        except BaseException as err:
            timeout = as_peer_timeout(err, rank=self.env.rank,
                                      timeout_s=self.spec.distributed.timeout_s)
            if timeout is not None:
                self.reporter.fail(str(timeout))
                raise timeout from None
            self.reporter.fail(one_line(err))
            raise
        finally:
            self.console.close()
            self.tb.close()
            self.indices.close()

    def _fit(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        if self.spec.model.compile_mode is not None:
            self._compile()
        last: EvalResult | None = None
        for epoch in range(self.epoch, self.num_epochs):
            t_epoch = time.perf_counter()
            train_loss, train_top1 = self._train_epoch(epoch)
            self.epoch = epoch + 1
            final = self.epoch == self.num_epochs
            if self.averaging is not None:
                self.averaging.end_of_epoch(final)  # lookahead: the average becomes the model
            self.timing["train_s"] += time.perf_counter() - t_epoch
            if final or self.epoch % self.spec.eval.every == 0:
                t_eval = time.perf_counter()
                last = self._evaluate(train_loss, train_top1, final=final)
                if final:
                    self.timing["final_eval_s"] = time.perf_counter() - t_eval
            if final or self.epoch % self.spec.checkpoint.every_epochs == 0:
                self._save_last()
        if last is None and (self.evaluate_again or self.reporter.last is None):
            # Resumed after the final epoch: evaluate what we have.
            self._evaluate(float("nan"), float("nan"), final=True)
        # Otherwise an attempt that died after its final checkpoint had logged the evaluation.
        latest = self.reporter.last or {}
        summary = self._summary(states.FINISHED, time.perf_counter() - t_start)
        self.tb.hparams(self._hparams(), {"best_top1": (self.best or {}).get("top1", 0.0),
                                          "final_top1": latest.get("top1", 0.0),
                                          **({"final_top1_tta": latest["top1_tta"]}
                                             if latest.get("top1_tta") is not None else {})})
        self.reporter.end(states.FINISHED)
        return summary

    def _compile(self) -> None:
        """Compile the training and evaluation graphs before the first step (`warm_up`), so
        no step and no evaluation pays for it; the time adds up in timing.compile_s (a
        resumed run compiles again)."""
        height, width, channels = self.meta.image_shape
        seconds = warm_up(
            WrappedModel(train=self.net, eval=self.eval_net), self.model,
            batch_size=self.micro_batch,
            eval_batch_size=self.spec.eval.batch_size // self.env.world_size,
            image_shape=(channels, height, width), num_classes=len(self.classes),
            amp_dtype=self.amp_dtype, device=self.env.device,
            channels_last=self.spec.model.channels_last)
        self.timing["compile_s"] = self.timing.get("compile_s", 0.0) + seconds
        self.console.message(f"compiled ({self.spec.model.compile_mode}) in {seconds:.1f} s")

    @property
    def best(self) -> dict[str, Any] | None:
        return self.reporter.best

    def _save_last(self, partial: tuple[RunningSums, ...] | None = None) -> None:
        state = self._gather_state(partial)  # collective: every rank takes part
        if self.run.is_writer:  # only rank 0 writes (concurrent writers corrupt it)
            rotate_and_save(self.run.path / "checkpoints", "last", state)

    def _stopped(self) -> dict[str, Any]:
        """Every rank stopped after the same step and its checkpoint is written: say so."""
        summary = self._summary(states.STOPPED, self.timing["train_s"])
        self.reporter.end(states.STOPPED, f"{self.stop.describe()} at step {self.step} (epoch "
                                          f"{self.step / self.steps_per_epoch:.2f}); resume "
                                          "continues from checkpoints/last.pt")
        self.console.message(f"stopped at step {self.step}: checkpoint written, resume with "
                             f"--resume")
        return summary

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        spec = self.spec
        self.net.train()
        self.train_loader.set_epoch(epoch)
        done = self.step - epoch * self.steps_per_epoch  # > 0 only resuming inside this epoch
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        self.console.start_epoch(epoch + 1, steps, done)
        window, total = self._sums(), self._sums()
        if done and self._partial is not None:
            window, total = (self._sums(sums) for sums in self._partial)
        self._partial = None
        every = spec.checkpoint.every_steps
        epoch_checkpoint = ((epoch + 1) % spec.checkpoint.every_epochs == 0
                            or epoch + 1 == self.num_epochs)
        t0 = t_window = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= steps:
                break  # a fractional last epoch
            if i < done:
                # Trained before the restart. Drawing the batch anyway replays the loader's
                # seeded order and augmentation stream up to here, so the rest is identical.
                continue
            loss, correct = self._step(batch.images, batch.labels)
            self.indices.record(self.step, batch.index)  # logging.sample_indices (debug)
            for sums in (window, total):
                sums.add(loss.detach().double(), correct, batch.labels.numel())
            last_in_epoch = i + 1 == steps
            if (self.step % spec.train.log_every == 0) or last_in_epoch:
                # A reduction across ranks and a CPU-GPU sync point: only every log_every steps.
                reduced = _all_ranks(window)
                now = time.perf_counter()
                values = {"loss": reduced.mean_loss(), "top1": reduced.top1(),
                          "lr": self.optimizer.lr,
                          "images_per_s": reduced.per_second(now - t_window)}
                self.run.log("train", epoch=round(epoch + (i + 1) / self.steps_per_epoch, 4),
                             step=self.step, values=values)
                self.tb.scalars("train", values, self.step)
                self.console.advance(0, loss=values["loss"], acc=values["top1"],
                                     ips=values["images_per_s"])
                window, t_window = self._sums(), now
            if self.stop_vote.any(self.stop.requested):  # a collective, every step
                self._save_last(partial=(window, total))
                self.timing["train_s"] += time.perf_counter() - t0
                raise _StopRequested
            if every and self.step % every == 0 and not (last_in_epoch and epoch_checkpoint):
                self._save_last(partial=(window, total))
            self.console.advance(1)
        elapsed = time.perf_counter() - t0
        reduced = _all_ranks(total)
        self.epoch_rates.append(reduced.per_second(elapsed))
        self.console.message(f"epoch {epoch + 1}: {self.epoch_rates[-1]:,.0f} img/s, {elapsed:.1f} s")
        return reduced.mean_loss(), reduced.top1()

    def _sums(self, values: Sequence[float] | None = None) -> RunningSums[torch.Tensor]:
        """Running sums as 0-d float64 tensors on the device (adding to them never syncs): zeros,
        or `values` from a mid-epoch checkpoint (float64 survives `tolist()` exactly)."""
        device = self.env.device
        if values is None:  # a fill kernel, not a host-to-device copy (which syncs on CUDA)
            return RunningSums.of(torch.zeros((), dtype=torch.float64, device=device)
                                  for _ in range(3))
        return RunningSums.of(torch.tensor(v, dtype=torch.float64, device=device) for v in values)

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's share of the global batch; its mean loss and the
        number it got right. With train.micro_batch_size the share goes through the model in
        micro-batches whose gradients add up (DDP reduces once, after the last)."""
        spec = self.spec.train
        chunks = list(zip(images.split(self.micro_batch), labels.split(self.micro_batch)))
        self.optimizer.set_step(self.step)
        self.optimizer.zero_grad()
        losses, corrects = [], []
        for k, (x, y) in enumerate(chunks):
            last = k + 1 == len(chunks)
            with nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                chunk_loss, chunk_correct = self._forward_backward(
                    x, y, weight=y.numel() / labels.numel())
            losses.append(chunk_loss)
            corrects.append(chunk_correct)
        if spec.grad_clip is not None:
            self.optimizer.unscale_(self.scaler)
            nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self.optimizer.step(self.scaler)
        self.scaler.update()
        self.step += 1
        if self.averaging is not None:
            self.averaging.after_step(self.step)
        return sum(losses), sum(corrects)

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor, *,
                          weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of one (micro-)batch that is `weight` of this rank's share; its
        loss times `weight` (the share's mean loss is their sum) and the number it got right."""
        spec = self.spec.train
        with torch.autocast(self.env.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.net(images)
        # The loss in float32: cross-entropy of bf16 logits loses precision. vgg8bn returns
        # log-probabilities; log_softmax is idempotent, so cross_entropy is still correct.
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=spec.label_smoothing)
        # DDP averages gradients over ranks: the mean of rank means is the global mean, and a
        # global sum is the mean of (rank sum x world size). Micro-batches' gradients add up,
        # so each counts by its share of the rank's batch.
        objective = (loss * weight if spec.loss_reduction == "mean"
                     else loss * (labels.numel() * self.env.world_size))
        self.scaler.scale(objective).backward()
        return loss.detach() * weight, (logits.argmax(1) == labels).sum().double()

    # ---------------------------------------------------------------- evaluation

    def _evaluate(self, train_loss: float, train_top1: float, *, final: bool = False) -> EvalResult:
        tta = self.spec.eval.tta if final or self.spec.eval.tta_every_eval else 0
        with self._averaged():
            broadcast_buffers(self.model, self.env)  # rank 0's statistics, as checkpointed
            result = evaluate(self.eval_net, self.test_loader, num_classes=len(self.classes),
                              amp_dtype=self.amp_dtype, device=self.env.device, tta=tta,
                              tta_threshold=self.spec.eval.tta_threshold)
            val = (evaluate(self.eval_net, self.val_loader, num_classes=len(self.classes),
                            amp_dtype=self.amp_dtype, device=self.env.device, tta=0)
                   if self.val_loader is not None else None)
        rate = self.epoch_rates[-1] if self.epoch_rates else None
        report = self.reporter.evaluation(
            epoch=self.epoch, step=self.step, result=result, val=val, train_loss=train_loss,
            train_top1=train_top1,
            checkpoint="checkpoints/best.pt" if self.spec.checkpoint.save_best else None,
            images_per_s=rate)
        self.tb.scalars("eval", {k: v for k, v in result.metrics().items() if k != "count"},
                        self.step)
        if val is not None:
            self.tb.scalars("val", {k: v for k, v in val.metrics().items()
                                    if k in ("loss", "top1", "top5")}, self.step)
        self.tb.misclassified(report.samples[:50], self.step)
        if report.improved and self.spec.checkpoint.save_best:
            with self._averaged():  # best.pt holds the weights that were evaluated
                state = self._gather_state()  # collective: every rank takes part
            if self.run.is_writer:
                save_checkpoint(self.run.path / "checkpoints" / "best.pt", state)
        tta_text = f"  top1 TTA{result.tta} {result.top1_tta:.2%}" if result.top1_tta is not None else ""
        self.console.message(
            f"epoch {self.epoch}/{self.num_epochs}: test loss {result.loss:.4f}  "
            f"top1 {result.top1:.2%}  top5 {result.top5:.2%}{tta_text}  (train loss "
            f"{train_loss:.4f}, {rate or 0:,.0f} img/s)")
        return result

    def _averaged(self) -> AbstractContextManager[None]:
        """Context: the EMA weights in the model (evaluation, best.pt); a no-op otherwise."""
        return self.averaging.applied() if self.averaging is not None else nullcontext()

    def _test_images_at(self, index: np.ndarray) -> np.ndarray:
        """Test images by position in the split (the misclassified ones a run keeps)."""
        if self._test_images is None:
            self._test_images, _ = read_split(self.spec.data.dir, "test")
        return self._test_images[index]

    # ---------------------------------------------------------------- checkpoints

    def _gather_state(self, partial: tuple[RunningSums, ...] | None = None) -> dict[str, Any]:
        """The full training state; a collective: every rank takes part.

        `partial`: this rank's running sums, for a checkpoint taken inside an epoch.
        """
        return gather_state(
            self.spec, self.env, self.meta, model=self.model, optimizer=self.optimizer,
            averaging=self.averaging, scaler=self.scaler, partial=partial,
            epoch=self.epoch, step=self.step, timing=dict(self.timing), best=self.best,
            epoch_rates=self.epoch_rates, last=self.reporter.last, last_val=self.reporter.last_val,
            metrics_bytes=self.run.metrics_bytes() if self.run.is_writer else 0)

    def _resume(self, state: dict[str, Any], path: str) -> None:
        """Restore everything else that determines the trajectory (weights are already in)."""
        self.console.message(f"resuming from {path} (epoch {state['epoch']}, step {state['step']})")
        self._partial = restore_state(state, self.env, optimizer=self.optimizer,
                                      averaging=self.averaging, scaler=self.scaler)
        self.timing.update(state.get("timing") or {})
        self.epoch, self.step = state["epoch"], state["step"]
        self.reporter.best = state["best"]
        self.reporter.last, self.reporter.last_val = state.get("last"), state.get("last_val")
        self.epoch_rates = list(state["epoch_rates"])
        self.run.truncate_metrics(state["metrics_bytes"])
        self.run.write_status(epoch=self.epoch, state="running", error=None)

    # ---------------------------------------------------------------- reporting

    def _summary(self, state: str, wall: float) -> dict[str, Any]:
        rates = self.epoch_rates[1:] or self.epoch_rates  # the first epoch includes warm-up
        return self.reporter.summary(
            state=state, epochs=self.spec.train.epochs, epochs_done=self.epoch, steps=self.step,
            parameters=self.parameters, train_time_s=wall,
            images_per_s=float(np.mean(rates)) if rates else None,
            # airbench's convention: whitening + training steps + the final (TTA) evaluation;
            # start-up, data loading and the other evaluations excluded.
            # compile_s is apart: airbench times a warmed-up run.
            timing={**self.timing, "time_to_accuracy_s": sum(
                v for k, v in self.timing.items() if k != "compile_s")},
            checkpoint="checkpoints/last.pt")

    def _hparams(self) -> dict[str, Any]:
        s = self.spec
        return {"model": s.model.name, "epochs": s.train.epochs,
                "global_batch_size": s.train.global_batch_size, "optimizer": s.optimizer.name,
                "lr": s.optimizer.lr, "weight_decay": s.optimizer.weight_decay,
                "schedule": s.schedule.name, "augment": s.augment.kind, "amp": s.train.amp,
                "world_size": self.env.world_size, "seed": s.train.seed}


def device_fields(env: DistEnv) -> dict[str, str | None]:
    """status.json's `device` (cuda or cpu), `device_name` (the GPU or CPU model) and `backend`
    (rank 0's: every rank of a run uses the same kind of device)."""
    if env.device.type == "cuda":
        name: str | None = torch.cuda.get_device_name(env.device)
    else:
        name = _cpu_model()
    return {"device": env.device.type, "device_name": name, "backend": env.backend}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _all_ranks(sums: RunningSums[torch.Tensor]) -> RunningSums[float]:
    """`sums` added up over all ranks, as floats (a collective and a host-device sync)."""
    stacked = torch.stack([sums.loss, sums.correct, sums.count])
    return RunningSums.of(all_reduce_sum(stacked).tolist())
