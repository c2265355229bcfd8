"""Returns, advantages and baselines (NumPy / torch, shapes [..., T])."""
from __future__ import annotations

import numpy as np


def discount_cumsum(x: np.ndarray, gamma: float) -> np.ndarray:
    """y[..., t] = sum_k gamma^k x[..., t+k] along the last axis."""
    out = np.zeros_like(x, dtype=np.float64)
    acc = np.zeros(x.shape[:-1], dtype=np.float64)
    for t in range(x.shape[-1] - 1, -1, -1):
        acc = x[..., t] + gamma * acc
        out[..., t] = acc
    return out


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float,
        last_values: np.ndarray | None = None) -> np.ndarray:
    """Generalized advantage estimation over the last axis.

    rewards, values: [..., T]; last_values: [...] value after the final step
    (0 for episodes that end; a bootstrap for truncated ones).
    """
    if last_values is None:
        last_values = np.zeros(rewards.shape[:-1])
    next_values = np.concatenate([values[..., 1:], last_values[..., None]], axis=-1)
    deltas = rewards + gamma * next_values - values
    return discount_cumsum(deltas, gamma * lam)


class LinearFeatureBaseline:
    """Value estimate linear in [obs, obs^2, t, t^2, t^3, 1], fitted by ridge regression
    to the discounted returns of one task's episodes."""

    def __init__(self, reg: float = 1e-5):
        self.reg = reg
        self.coef: np.ndarray | None = None

    @staticmethod
    def features(obs: np.ndarray) -> np.ndarray:
        """obs [M, T, D] -> [M, T, F]."""
        o = np.clip(obs, -10, 10).astype(np.float64)
        m, t = obs.shape[:2]
        ts = np.broadcast_to((np.arange(t) / 100.0)[None, :, None], (m, t, 1))
        return np.concatenate([o, o ** 2, ts, ts ** 2, ts ** 3, np.ones_like(ts)], axis=-1)

    def fit(self, obs: np.ndarray, returns: np.ndarray) -> "LinearFeatureBaseline":
        f = self.features(obs).reshape(-1, self.features(obs[:1, :1]).shape[-1])
        y = returns.reshape(-1)
        reg = self.reg
        a, b = f.T @ f, f.T @ y
        for _ in range(5):
            coef = np.linalg.lstsq(a + reg * np.eye(a.shape[0]), b, rcond=None)[0]
            if np.all(np.isfinite(coef)):
                break
            reg *= 10
        self.coef = coef
        return self

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return self.features(obs) @ self.coef


def task_advantages(obs: np.ndarray, rewards: np.ndarray, gamma: float, lam: float,
                    normalize: bool = True) -> np.ndarray:
    """Advantages for one task's episodes (obs [M, T, D], rewards [M, T]) with a
    linear feature baseline fitted to those episodes."""
    returns = discount_cumsum(rewards, gamma)
    values = LinearFeatureBaseline().fit(obs, returns).predict(obs)
    adv = gae(rewards, values, gamma, lam)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv
