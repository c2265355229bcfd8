"""Microseconds per RL²-PPO actor call for one slot (the sampler's batch-1 units), ML10 sizes.

    python benchmarks/rl2_act.py

Times, in one process (one torch thread): `act` as the sampler calls it (one `aten.gru_cell`
step with the sequence GRU's weights, policy head only), `observe`, and for comparison the
act of commit f5df9e0 (`nn.GRU` over a length-1 sequence with both heads, `net.forward`),
reproduced here line for line. Median of 5
rounds of 2,000 calls. Writes benchmarks/results/rl2_act.json.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _us(fn, n: int = 2000) -> float:
    for _ in range(200):
        fn()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig
    from metarl.training.run import git_commit

    cfg = RL2PPOConfig()  # hidden 256, as configs/ml10_rl2_ppo.yaml
    agent = RL2PPO(cfg, 39, 4)
    actor = agent.actor()
    state = agent.initial_task_state(1)
    obs, noise, reward = torch.zeros(1, 39), torch.zeros(1, 4), torch.zeros(1)

    def previous_act():  # metarl/agents/rl2_ppo.py _Actor.act at f5df9e0
        h = state["h"]
        x = torch.cat([obs.to(h), state["prev_a"], state["prev_r"], state["prev_d"]], dim=-1)
        mean, _, out = actor.net(x.unsqueeze(1), h)
        mean = mean.squeeze(1)
        new = dict(state, h=out.squeeze(1))
        return mean + actor.net.log_std_of(new["h"]).exp() * noise.to(mean), new
    with torch.no_grad():
        out = {
            "act_us": _us(lambda: actor.act(obs, state, deterministic=False, noise=noise)),
            "observe_us": _us(lambda: actor.observe(state, noise, reward, False)),
            "previous_act_us": _us(previous_act),
        }
    out.update(hidden_size=cfg.hidden_size, torch=torch.__version__, cores=os.cpu_count(),
               command="python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]), git_commit=git_commit())
    path = ROOT / "benchmarks" / "results" / "rl2_act.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
