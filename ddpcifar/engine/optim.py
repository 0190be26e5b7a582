"""Optimizers built from the spec, with the learning rate set at every step from the schedule.

`TrainOptimizer` holds one torch optimizer (SGD or AdamW), or two for 'muon' (`BatchedMuon`,
torch.optim.Muon's update batched over same-shape matrices, for the convolution filters, SGD
for the rest), and sets every group's lr at each step as
`base_lr * lr_factor(step)`; a group with a freeze step (the whitening stem's bias) drops to lr
0 from then on. Freezing by lr rather than `requires_grad` keeps DDP's set of gradients fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ddpcifar.schedule import lr_factor
from ddpcifar.spec import OptimizerConfig, ScheduleConfig

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class ParamRoles:
    """Which parameters get special treatment; everything else trainable is 'other'."""

    whitening_bias: nn.Parameter | None = None


def momentum_scale(momentum: float) -> float:
    """1 + 1/(1 - momentum): how much larger heavy-ball steps are than the gradient, at steady state."""
    return 1 + 1 / (1 - momentum)


def _split(model: nn.Module, cfg: OptimizerConfig, roles: ParamRoles) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by role: muon filters, norm, whitening bias, weights, other 1-d."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters()}
    special = {id(roles.whitening_bias)} if roles.whitening_bias is not None else set()
    parts: dict[str, list[nn.Parameter]] = {"filters": [], "norm": [], "whitening_bias": [],
                                            "weights": [], "other": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in special:
            parts["whitening_bias"].append(p)
        elif id(p) in norm_ids:
            parts["norm"].append(p)
        elif cfg.name == "muon" and p.ndim == 4:
            parts["filters"].append(p)
        elif p.ndim > 1:
            parts["weights"].append(p)
        else:
            parts["other"].append(p)
    return parts


# Newton-Schulz quintic coefficients and the norm's floor: torch.optim.Muon's (and Keller Jordan's).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


@torch.no_grad()
def orthogonalize(g: torch.Tensor, steps: int, eps: float = NS_EPS) -> torch.Tensor:
    """Newton-Schulz iterations towards the nearest semi-orthogonal matrix, in bf16.

    `g` is one (m, n) matrix or a stack (b, m, n) of same-shape matrices, each normalised by its
    own Frobenius norm: a stack is one batched matmul per product instead of b small ones. A
    single matrix takes exactly torch.optim.Muon's operations, so the two agree bitwise.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()  # the iteration is robust to bf16 rounding; it halves the matmuls' bytes
    tall = g.size(-2) > g.size(-1)
    if tall:  # iterate on the wide orientation: the Gram matrix is then the smaller one
        x = x.mT
    if x.ndim == 2:
        x = x / x.norm().clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    else:
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class BatchedMuon(torch.optim.Optimizer):
    """Muon over 2-d parameters with one Newton-Schulz call per shape: torch.optim.Muon's update
    (momentum as an EMA, Nesterov, lr scaled by sqrt(max(1, rows/cols)), no weight decay), with
    the same state ("momentum_buffer") and group keys, so checkpoints move between the two.

    airbench's six filters have four shapes; its three (256, 2304) filters orthogonalise as one
    (3, 256, 2304) stack.
    """

    def __init__(self, params: list[nn.Parameter], *, lr: float, momentum: float,
                 nesterov: bool, ns_steps: int) -> None:
        if any(p.ndim != 2 for p in params):
            raise ValueError("BatchedMuon takes 2-d parameters only")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, weight_decay=0.0,
                                      ns_coefficients=NS_COEFFICIENTS, eps=NS_EPS))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            buckets: dict[tuple[Any, ...], list[nn.Parameter]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    buckets.setdefault((p.shape, p.dtype, p.device), []).append(p)
            momentum, lr = group["momentum"], group["lr"]
            for (shape, _, _), params in buckets.items():
                grads = [p.grad for p in params]
                bufs = [self._buffer(p) for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - momentum)
                updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
                if len(params) == 1:
                    ortho = [orthogonalize(updates[0], group["ns_steps"], group["eps"])]
                else:
                    ortho = orthogonalize(torch.stack(updates), group["ns_steps"],
                                          group["eps"]).unbind(0)
                step = lr * math.sqrt(max(1.0, shape[0] / shape[1]))
                for p, update in zip(params, ortho):
                    p.add_(update, alpha=-step)

    def _buffer(self, p: nn.Parameter) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
        return state["momentum_buffer"]


class ConvMuon:
    """Muon (`BatchedMuon`) over 4-d convolution filters, each seen as an (out, in*k*k) matrix.

    Each filter gets a 2-d Parameter sharing its storage (columns in memory order: Muon's
    orthogonalisation commutes with a permutation of columns, so the layout does not matter);
    gradients are handed over in that shape (a view, no copy) before the step.
    """

    def __init__(self, filters: list[nn.Parameter], *, lr: float, momentum: float,
                 nesterov: bool, normalize: bool, ns_steps: int) -> None:
        self.filters = filters
        self.normalize = normalize
        self.matrices = [nn.Parameter(_matrix_view(p.data)) for p in filters]
        self.optimizer = BatchedMuon(self.matrices, lr=lr, momentum=momentum, nesterov=nesterov,
                                     ns_steps=ns_steps)

    @torch.no_grad()
    def prepare(self) -> None:
        """Normalise the filters (if asked) and hand their gradients to the 2-d parameters."""
        for p, m in zip(self.filters, self.matrices):
            if self.normalize:  # airbench94_muon: each filter tensor held at norm sqrt(out)
                p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp(min=1e-12))
            m.grad = None if p.grad is None else _permuted_like(p.grad, p.data).reshape(m.shape)

    def zero_grad(self) -> None:
        """Drop the gradients of the filters and of their 2-d views.

        The filters are not the torch optimizer's parameters, so its own zero_grad leaves their
        gradients in place, and the next backward (DDP's too) would add to them.
        """
        for p in (*self.filters, *self.matrices):
            p.grad = None

    def grads_finite(self) -> bool:
        return all(bool(torch.isfinite(m.grad).all()) for m in self.matrices if m.grad is not None)


def _matrix_view(t: torch.Tensor) -> torch.Tensor:
    """A 2-d (out, rest) view sharing `t`'s storage (contiguous or channels_last 4-d tensors)."""
    if t.is_contiguous():
        return t.view(t.shape[0], -1)
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).view(t.shape[0], -1)
    raise ValueError(f"muon needs contiguous or channels_last filters, got strides {t.stride()}")


def _permuted_like(grad: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """`grad` with its dims in the same order `_matrix_view` flattens `data`."""
    if data.is_contiguous():
        return grad
    return grad.permute(0, 2, 3, 1)


class TrainOptimizer:
    """The run's optimizer(s) and per-step learning rates, checkpointed as one state."""

    def __init__(self, model: nn.Module, cfg: OptimizerConfig, schedule: ScheduleConfig, *,
                 steps_per_epoch: int, total_steps: int, global_batch: int, loss_reduction: str,
                 roles: ParamRoles = ParamRoles(), whitening_bias_lr_scale: float = 1.0,
                 whitening_bias_steps: int | None = None, whitening_bias_decay: bool = False) -> None:
        self.cfg = cfg
        self.factor: Callable[[int], float] = (
            lambda step: lr_factor(step, total_steps, steps_per_epoch, schedule))
        parts = _split(model, cfg, roles)
        lr = cfg.lr
        decay = cfg.weight_decay
        if cfg.units == "per1024":
            # Per 1024 examples of summed loss: a mean loss has 1/batch the gradient, so its
            # lr is batch times larger for the same step.
            lr = cfg.lr / (1024 * momentum_scale(cfg.momentum))
            lr *= global_batch if loss_reduction == "mean" else 1
            decay = cfg.weight_decay * global_batch / (1024 * momentum_scale(cfg.momentum))
        decoupled = cfg.weight_decay_mode == "decoupled"

        def group(params: list[nn.Parameter], group_lr: float, *, decays: bool,
                  freeze_step: int | None = None, linear_to_freeze: bool = False) -> dict[str, Any]:
            # Decoupled: torch multiplies the decay by the group's lr, so divide it out here.
            wd = (decay / group_lr if decoupled else decay) if decays else 0.0
            return {"params": params, "lr": group_lr, "base_lr": group_lr, "weight_decay": wd,
                    "freeze_step": freeze_step, "linear_to_freeze": linear_to_freeze}

        groups = [
            group(parts["weights"], lr, decays=True),
            group(parts["norm"], lr * cfg.norm_lr_scale, decays=decoupled),
            group(parts["other"], lr, decays=decoupled),
            group(parts["whitening_bias"], lr * whitening_bias_lr_scale, decays=decoupled,
                  freeze_step=whitening_bias_steps, linear_to_freeze=whitening_bias_decay),
        ]
        groups = [g for g in groups if g["params"]]
        if cfg.name == "adamw":
            self.main: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas,
                                                                 eps=cfg.eps)
        else:
            self.main = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                                        nesterov=cfg.nesterov and cfg.momentum > 0)
        self.muon = (ConvMuon(parts["filters"], lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                              nesterov=cfg.nesterov, normalize=cfg.muon_normalize,
                              ns_steps=cfg.muon_ns_steps)
                     if parts["filters"] else None)
        if self.muon is not None:
            for g in self.muon.optimizer.param_groups:
                g.update(base_lr=cfg.muon_lr, freeze_step=None, linear_to_freeze=False)
        self.set_step(0)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.main] + ([self.muon.optimizer] if self.muon is not None else [])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def lr(self) -> float:
        """The first group's current lr (what the logs show)."""
        return self.main.param_groups[0]["lr"]

    def set_step(self, step: int) -> None:
        """Set every group's lr for optimizer step `step` (0-based)."""
        factor = self.factor(step)
        for g in self.param_groups:
            freeze = g["freeze_step"]
            if freeze is not None and step >= freeze:
                g["lr"] = 0.0
            elif g["linear_to_freeze"] and freeze:
                g["lr"] = g["base_lr"] * (1 - step / freeze)
            else:
                g["lr"] = g["base_lr"] * factor

    def zero_grad(self) -> None:
        self.main.zero_grad(set_to_none=True)
        if self.muon is not None:
            self.muon.zero_grad()

    def step(self, scaler: torch.amp.GradScaler) -> None:
        """One step of every optimizer; with an fp16 scaler, a step with inf/nan gradients is skipped."""
        if self.muon is not None:
            self.muon.prepare()
            if scaler.is_enabled():
                scaler.unscale_(self.muon.optimizer)  # a sync point, fp16 only
            if not scaler.is_enabled() or self.muon.grads_finite():
                self.muon.optimizer.step()
        scaler.step(self.main)

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        """Unscale the main optimizer's gradients (before clipping); muon unscales in `step`."""
        scaler.unscale_(self.main)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(),
                "muon": self.muon.optimizer.state_dict() if self.muon is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        if self.muon is not None:
            self.muon.optimizer.load_state_dict(state["muon"])
