"""torch.compile against eager on one spec's training step, side by side in one process.

Each variant gets a fresh model and optimizer from the spec (the same seed) and random
normalised batches of the spec's layout:

  eager          the model as it is
  default, max-autotune, reduce-overhead, max-autotune-no-cudagraphs
                 torch.compile(model, mode=...), as `model.compile` does in the trainer
  step           torch.compile of the forward and the loss together (autocast inside)

First every variant warms up: its first step (the compile) and its first evaluation forward are
timed apart as compile_s. Then `--rounds` rounds time `--steps` steps of each variant in turn
(interleaved, so a slow spell of the machine hits all of them), split into forward, backward and
optimizer (on CUDA the split synchronises, so it adds up to more than a plain step), and the
evaluation forward (eval mode, no grad, `--eval-batch`). `--profile` adds torch.profiler's top
operators by self time per step for each variant; `--ns` times Muon's orthogonalisation of the
model's filters one by one against batched by shape, in bf16 and fp32. `--all-models` instead
compiles every registered model (training step and evaluation forward, channels-last, the
spec's autocast) and says which compile and how long each took.

    python benchmarks/compile_bench.py --spec specs/airbench94.json --batch 512 \\
        --variants eager default max-autotune step --rounds 3 --profile \\
        --out benchmarks/results/compile_airbench94.json
    python benchmarks/compile_bench.py --all-models --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, load_average, machine, this_command  # noqa: E402

from ddpcifar.engine.device import configure_backends  # noqa: E402
from ddpcifar.engine.optim import ParamRoles, TrainOptimizer, orthogonalize  # noqa: E402
from ddpcifar.engine.wrap import build_on_device, resolve_amp  # noqa: E402
from ddpcifar.models.whitening import init_whitening, stem_of  # noqa: E402
from ddpcifar.spec import RunSpec, load_spec  # noqa: E402

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
VARIANTS = ("eager", *MODES, "step")


class Clock:
    """Seconds between marks; synchronises CUDA first (CPU kernels are synchronous)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class Variant:
    """One way of running the spec's training step, with its own model and optimizer."""

    def __init__(self, name: str, spec: RunSpec, device: torch.device, batch: int,
                 backend: str) -> None:
        self.name = name
        torch.manual_seed(spec.train.seed)
        self.model = build_on_device(spec.model.name, num_classes=10,
                                     batchnorm=spec.model.batchnorm, device=device,
                                     channels_last=spec.model.channels_last)
        roles = ParamRoles()
        if spec.model.whitening is not None:  # freezes the stem's weight, as a run does
            images = torch.randn(64, 3, 32, 32, device=device)
            init_whitening(self.model, images, spec.model.whitening.eps)
            roles = ParamRoles(whitening_bias=stem_of(self.model).bias)
        self.optimizer = TrainOptimizer(
            self.model, spec.optimizer, spec.schedule, steps_per_epoch=50_000 // batch,
            total_steps=10 * (50_000 // batch), global_batch=batch,
            loss_reduction=spec.train.loss_reduction, roles=roles)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self.amp = resolve_amp(spec.train.amp, device)
        self.autocast = dict(device_type=device.type, dtype=self.amp or torch.float32,
                             enabled=self.amp is not None)
        self.label_smoothing = spec.train.label_smoothing
        self.sum_loss = spec.train.loss_reduction == "sum"
        mode = name if name in MODES else "default"
        compiled = name != "eager"
        self.net = (torch.compile(self.model, mode=mode, backend=backend)
                    if compiled and name != "step" else self.model)
        self.forward_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        self.forward_loss = (torch.compile(self._forward_loss, backend=backend)
                             if name == "step" else self._forward_loss)
        self.eval_net = (torch.compile(self.model, mode=mode, backend=backend)
                         if compiled else self.model)
        self.step_count = 0

    def _forward_loss(self, images: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(**self.autocast):
            logits = self.net(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing,
                               reduction="sum" if self.sum_loss else "mean")
        return loss, logits

    def step(self, images: torch.Tensor, labels: torch.Tensor, clock: Clock | None = None
             ) -> dict[str, float]:
        """One training step; with a clock, the seconds of its forward, backward and optimizer."""
        self.model.train()
        t0 = clock.now() if clock else 0.0
        loss, _ = self.forward_loss(images, labels)
        t1 = clock.now() if clock else 0.0
        self.optimizer.set_step(self.step_count)
        self.optimizer.zero_grad()
        loss.backward()
        t2 = clock.now() if clock else 0.0
        self.optimizer.step(self.scaler)
        self.step_count += 1
        t3 = clock.now() if clock else 0.0
        return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> None:
        self.model.eval()
        with torch.autocast(**self.autocast):
            self.eval_net(images)


def random_batches(n: int, batch: int, device: torch.device, channels_last: bool
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [(torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt),
             torch.randint(10, (batch,), device=device)) for _ in range(n)]


def top_operators(variant: Variant, batches: list, steps: int, device: torch.device,
                  top: int) -> list[dict[str, Any]]:
    """torch.profiler's operators by self time per step (CPU time; device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            variant.step(*batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"name": e.key, "calls_per_step": e.count / steps,
             "self_ms_per_step": round(getattr(e, key) / 1000 / steps, 3),
             "share": round(getattr(e, key) / total, 4)} for e in events[:top]]


def ns_timing(model: torch.nn.Module, ns_steps: int, repeats: int) -> dict[str, Any]:
    """Muon's orthogonalisation of this model's filters: one call per filter against one per
    shape (stacked), in bf16 (what Muon uses) and fp32; milliseconds per optimizer step."""
    shapes = [(p.shape[0], p[0].numel()) for p in model.parameters()
              if p.ndim == 4 and p.requires_grad]
    mats = [torch.randn(s, device=next(model.parameters()).device) for s in shapes]
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m in mats:
        groups.setdefault(tuple(m.shape), []).append(m)
    stacks = [torch.stack(g) if len(g) > 1 else g[0] for g in groups.values()]
    clock = Clock(mats[0].device)
    out: dict[str, Any] = {"shapes": [list(s) for s in shapes], "ns_steps": ns_steps}
    for dtype in (torch.bfloat16, torch.float32):
        def run(items: list[torch.Tensor]) -> float:
            for m in items:  # warm-up
                _orthogonalize_as(m, ns_steps, dtype)
            t0 = clock.now()
            for _ in range(repeats):
                for m in items:
                    _orthogonalize_as(m, ns_steps, dtype)
            return 1000 * (clock.now() - t0) / repeats
        name = str(dtype).replace("torch.", "")
        out[f"{name}_one_by_one_ms"] = round(run(mats), 2)
        out[f"{name}_batched_ms"] = round(run(stacks), 2)
    return out


def _orthogonalize_as(m: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.bfloat16:
        return orthogonalize(m, steps)
    # fp32 for comparison only: the same iteration without the bf16 cast.
    a, b, c = 3.4445, -4.7750, 2.0315
    x = m / m.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


def compile_every_model(spec: RunSpec, device: torch.device, batch: int, backend: str
                        ) -> list[dict[str, Any]]:
    """Each registered model through torch.compile: a training forward and backward, then an
    evaluation forward with a dynamic batch (what the trainer's warm-up does)."""
    from ddpcifar.models import model_names

    amp = resolve_amp(spec.train.amp, device)
    autocast = dict(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None)
    rows = []
    for name in model_names():
        torch.manual_seed(0)
        model = build_on_device(name, num_classes=10, batchnorm=spec.model.batchnorm,
                                device=device, channels_last=True)
        net = torch.compile(model, backend=backend)
        images, labels = random_batches(1, batch, device, True)[0]
        t0 = time.perf_counter()
        try:
            model.train()
            with torch.autocast(**autocast):
                loss = F.cross_entropy(net(images).float(), labels)
            loss.backward()
            model.eval()
            with torch.no_grad(), torch.autocast(**autocast):
                x = images[: batch // 2]
                torch._dynamo.maybe_mark_dynamic(x, 0)
                net(x)
            row = {"model": name, "ok": True}
        except Exception as err:  # reported, and the next model is tried
            row = {"model": name, "ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def keep_aten_max_pool_backward() -> None:
    """An experiment, through inductor's private tables: no decomposition and no lowering of
    max_pool2d_with_indices_backward, so the compiled graph calls ATen's kernel (the one eager
    uses). The FX graph cache does not key on these tables, so it is turned off."""
    from torch._inductor import config, decomposition, lowering

    op = torch.ops.aten.max_pool2d_with_indices_backward
    for key in (op, op.default):
        decomposition.decompositions.pop(key, None)
        lowering.lowerings[key] = lowering.fallback_max_pool2d_with_indices_backward
    config.fx_graph_cache = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--spec", default="specs/airbench94.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="spec override (repeatable)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager", "default"])
    parser.add_argument("--batch", type=int, help="default: the spec's global batch size")
    parser.add_argument("--eval-batch", type=int, help="default: the spec's eval batch size")
    parser.add_argument("--warmup", type=int, default=3, help="steps after the first, untimed")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--eval-steps", type=int, default=3, help="timed eval forwards per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend (aot_eager: the plumbing without codegen)")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="a torch._inductor.config setting (repeatable), e.g. "
                             "cpp.enable_kernel_profile=True to see each generated kernel")
    parser.add_argument("--aten-max-pool-backward", action="store_true",
                        help="experiment: inductor calls ATen's max_pool2d_with_indices_backward "
                             "instead of decomposing it (private inductor tables; graph cache off)")
    parser.add_argument("--profile", action="store_true", help="top operators per variant")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--ns", action="store_true", help="time Muon's orthogonalisation")
    parser.add_argument("--all-models", action="store_true",
                        help="only compile every registered model and report which work")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config

    if args.aten_max_pool_backward:
        keep_aten_max_pool_backward()
    for setting in args.inductor:
        key, _, value = setting.partition("=")
        inductor_config.patch({key: json.loads(value.lower() if value in ("True", "False")
                                                else value)}).__enter__()
    device = torch.device(args.device)
    spec = load_spec(args.spec, ["data.dir=unused", "train.deterministic=false", *args.overrides],
                     cuda=device.type == "cuda")
    configure_backends(device, spec.train.deterministic)
    batch = args.batch or spec.train.global_batch_size
    eval_batch = args.eval_batch or spec.eval.batch_size
    if args.all_models:
        load_before = load_average()
        rows = compile_every_model(spec, device, batch, args.backend)
        stamp = {"machine": machine(), "commit": commit(), "command": this_command(),
                 "load_before": load_before, "load_after": load_average(), "batch": batch}
        if args.out:
            args.out.write_text(json.dumps({"models": [{**stamp, **r} for r in rows]}, indent=2))
        return 0 if all(r["ok"] for r in rows) else 1
    batches = random_batches(4, batch, device, spec.model.channels_last)
    eval_images = random_batches(1, eval_batch, device, spec.model.channels_last)[0][0]
    clock = Clock(device)
    load_before = load_average()
    common = {"spec": args.spec, "overrides": args.overrides, "batch": batch,
              "eval_batch": eval_batch, "device": args.device, "threads": torch.get_num_threads(),
              "amp": str(resolve_amp(spec.train.amp, device)).replace("torch.", ""),
              "channels_last": spec.model.channels_last, "optimizer": spec.optimizer.name,
              "backend": args.backend, "inductor": args.inductor,
              "aten_max_pool_backward": args.aten_max_pool_backward}

    variants = [Variant(name, spec, device, batch, args.backend) for name in args.variants]
    results: dict[str, dict[str, Any]] = {v.name: {"variant": v.name} for v in variants}
    for v in variants:  # warm-up: the compile, timed apart
        t0 = clock.now()
        v.step(*batches[0])
        first = clock.now() - t0
        for i in range(args.warmup):
            v.step(*batches[(i + 1) % len(batches)])
        t0 = clock.now()
        v.evaluate(eval_images)
        first_eval = clock.now() - t0
        results[v.name].update(first_step_s=round(first, 3), first_eval_s=round(first_eval, 3))
        print(f"[{v.name}] first step {first:.1f} s, first eval forward {first_eval:.1f} s",
              flush=True)

    steps_ms: dict[str, list[float]] = {v.name: [] for v in variants}
    split: dict[str, dict[str, float]] = {v.name: {} for v in variants}
    eval_ms: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            t0 = clock.now()
            for i in range(args.steps):
                v.step(*batches[i % len(batches)])
            steps_ms[v.name].append(1000 * (clock.now() - t0) / args.steps)
            for i in range(args.steps if device.type == "cpu" else 3):  # the split, separately
                for part, s in v.step(*batches[i % len(batches)], clock=clock).items():
                    split[v.name][part] = split[v.name].get(part, 0.0) + s
            t0 = clock.now()
            for _ in range(args.eval_steps):
                v.evaluate(eval_images)
            eval_ms[v.name].append(1000 * (clock.now() - t0) / args.eval_steps)
            print(f"round {r + 1}/{args.rounds} [{v.name}] {steps_ms[v.name][-1]:.1f} ms/step, "
                  f"eval {eval_ms[v.name][-1]:.1f} ms/forward", flush=True)

    eager_ms = statistics.median(steps_ms["eager"]) if "eager" in steps_ms else None
    eager_eval = statistics.median(eval_ms["eager"]) if "eager" in eval_ms else None
    for v in variants:
        row = results[v.name]
        step_ms, fwd_ms = statistics.median(steps_ms[v.name]), statistics.median(eval_ms[v.name])
        n_split = args.rounds * (args.steps if device.type == "cpu" else 3)
        row.update(step_ms_rounds=[round(x, 2) for x in steps_ms[v.name]],
                   step_ms=round(step_ms, 2), images_per_s=round(1000 * batch / step_ms, 1),
                   split_ms={k: round(1000 * s / n_split, 2) for k, s in split[v.name].items()},
                   eval_ms_rounds=[round(x, 2) for x in eval_ms[v.name]],
                   eval_images_per_s=round(1000 * eval_batch / fwd_ms, 1),
                   # compile_s: the first call's time less a steady call's (the compile alone).
                   compile_s=round(row["first_step_s"] - step_ms / 1000
                                   + row["first_eval_s"] - fwd_ms / 1000, 2))
        if eager_ms:
            row["speedup_vs_eager"] = round(eager_ms / step_ms, 3)
            row["eval_speedup_vs_eager"] = round(eager_eval / fwd_ms, 3)
        if args.profile:
            row["profile"] = top_operators(v, batches, args.profile_steps, device, args.top)
    load_after = load_average()
    provenance = {"machine": machine(), "commit": commit(), "command": this_command(),
                  "load_before": load_before, "load_after": load_after,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    records = [{**common, **provenance, **results[v.name]} for v in variants]
    out: dict[str, Any] = {"records": records}
    if args.ns:
        out["ns"] = {**provenance, **ns_timing(variants[0].model, spec.optimizer.muon_ns_steps, 5)}

    print(f"{'variant':28} {'ms/step':>9} {'img/s':>7} {'fwd':>7} {'bwd':>7} {'opt':>7} "
          f"{'eval img/s':>10} {'compile s':>9} {'speed-up':>8}")
    for row in records:
        s = row["split_ms"]
        print(f"{row['variant']:28} {row['step_ms']:>9.1f} {row['images_per_s']:>7.0f} "
              f"{s['forward']:>7.1f} {s['backward']:>7.1f} {s['optimizer']:>7.1f} "
              f"{row['eval_images_per_s']:>10.0f} {row['compile_s']:>9.1f} "
              f"{row.get('speedup_vs_eager', float('nan')):>8.3f}")
        for op in row.get("profile", [])[:args.top]:
            print(f"    {op['self_ms_per_step']:>9.1f} ms {op['share']:>6.1%} "
                  f"x{op['calls_per_step']:<5g} {op['name'][:90]}")
    if "ns" in out:
        print("Newton-Schulz per optimizer step:", json.dumps(out["ns"]))
    print(f"CPU {provenance['machine']['cpu']}, load {load_before} before, {load_after} after")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
