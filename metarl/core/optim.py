"""Conjugate gradient and a backtracking line search for trust-region updates."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def conjugate_gradient(mvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve A x = b for symmetric positive-definite A given x -> A x."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = mvp(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def backtracking_line_search(
    step: Tensor,
    apply: Callable[[Tensor], None],
    evaluate: Callable[[], tuple[float, float]],
    loss_before: float,
    max_kl: float,
    max_steps: int = 15,
    ratio: float = 0.8,
) -> tuple[bool, int, float, float]:
    """Try x0 + ratio^k * step for k = 0..max_steps-1.

    `apply(delta)` sets the parameters to x0 + delta; `evaluate()` returns
    (loss, kl) at the current parameters. A step is accepted when loss and KL
    are finite, the loss went down and KL <= max_kl; otherwise the parameters
    are restored to x0. Returns (accepted, k, loss, kl).
    """
    loss, kl = loss_before, 0.0
    for k in range(max_steps):
        apply(step * ratio ** k)
        loss, kl = evaluate()
        finite = bool(torch.isfinite(torch.tensor([loss, kl])).all())
        if finite and loss < loss_before and kl <= max_kl:
            return True, k, loss, kl
    apply(torch.zeros_like(step))
    return False, max_steps, loss_before, 0.0
