"""Is a PEARL checkpoint limited by its task inference or by its policy? (ML1 reach-style goals)

Runs the adaptation protocol (one episode a round) on every training and every held-out goal and, after
each adaptation round k, records the posterior mean of the task's context, the z the policy acted on and
where the hand ended. Then it fits, by least squares:

- posterior mean -> goal, on the training goals, scored on the held-out goals: how much of the goal the
  encoder's posterior carries (compared with predicting the mean training goal for every goal);
- acting z -> final hand position, on all goals: how closely the policy goes where its z points;
- goal -> final hand position: the per-axis slope (1 = the hand follows the goal, 0 = ignores it);
- per axis: the spread (std) of the final hand positions in each round, round 0 (z from the prior)
  included, and the median |hand - goal|;
- held-out success split by the goal's x: within 5 cm of the training goals' mean x, or farther. The
  hand starts on that plane, so a context whose hand positions stay near it cannot tell +x from -x
  goals (a reward is a distance): a policy that never resolves x succeeds only on the near half.

A precise z -> hand fit with a poor posterior -> goal fit says the encoder is the bottleneck.

    python benchmarks/pearl_inference.py CHECKPOINT [--rounds 2] [--seed 0] [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lstsq_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Affine least squares (tiny ridge for conditioning): weights [D + 1, Y]."""
    x1 = np.c_[x, np.ones(len(x))]
    return np.linalg.solve(x1.T @ x1 + 1e-3 * np.eye(x1.shape[1]), x1.T @ y)


def lstsq_predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.c_[x, np.ones(len(x))] @ w


def rounded(v: np.ndarray, digits: int = 4) -> list[float]:
    return [round(float(x), digits) for x in v]


def median_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(a - b, axis=-1)))


def main(argv=None) -> int:
    import torch

    from metarl.core.types import ConfigError
    from metarl.training.diagnostics import goal_of, load_ml1
    from metarl.training.evaluation import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 10:
        raise SystemExit(f"pearl_inference: --rounds must be in 1..10, got {args.rounds}")
    try:
        ckpt, bench, sampler, agent = load_ml1(args.checkpoint, args.seed, agent="pearl")
    except ConfigError as e:
        raise SystemExit(f"pearl_inference: {e}")
    k_max, latent = args.rounds, agent.latent_dim
    data: dict[str, dict[str, np.ndarray]] = {}
    adapt = agent.adapt
    try:
        for split in ("train", "test"):
            tasks = list(bench.tasks(split))
            n = len(tasks)
            d = {"goal": np.stack([goal_of(t) for t in tasks]), "mu": np.zeros((n, k_max + 1, latent)),
                 "z": np.zeros((n, k_max + 1, latent)), "hand": np.zeros((n, k_max + 1, 3)),
                 "success": np.zeros((n, k_max + 1))}
            where = {}

            def on_batch(rows, k, batch, d=d, where=where):
                d["hand"][rows, k] = batch.next_obs[:, 0, -1, :3]
                d["success"][rows, k] = batch.episode_success().mean(1)
                where.update(rows=rows, k=k)

            def recording_adapt(state, batch, rng, d=d, where=where):
                new = adapt(state, batch, rng)
                with torch.no_grad():
                    mu, _ = agent.posterior(new["ctx"])
                d["mu"][where["rows"], where["k"] + 1] = mu.cpu().numpy()
                d["z"][where["rows"], where["k"] + 1] = new["z"].cpu().numpy()
                return new

            agent.adapt = recording_adapt
            evaluate(agent, sampler, tasks, k_max, 1, np.random.default_rng(args.seed), on_batch=on_batch)
            agent.adapt = adapt
            data[split] = d
    finally:
        sampler.vec_env.close()

    tr, te = data["train"], data["test"]
    rows = []
    both = {k: np.r_[tr[k], te[k]] for k in tr}
    near = np.abs(te["goal"][:, 0] - tr["goal"][:, 0].mean()) < 0.05
    split = bool(near.any() and (~near).any())
    for k in range(1, k_max + 1):
        w = lstsq_fit(tr["mu"][:, k], tr["goal"])
        w_hand = lstsq_fit(both["z"][:, k], both["hand"][:, k])
        w_goal = lstsq_fit(both["goal"], both["hand"][:, k])
        rows.append({
            "round": k,
            "heldout_success": float(te["success"][:, k].mean()),
            "posterior_to_goal_heldout_m": median_dist(lstsq_predict(w, te["mu"][:, k]), te["goal"]),
            "posterior_to_goal_train_m": median_dist(lstsq_predict(w, tr["mu"][:, k]), tr["goal"]),
            "z_to_hand_m": median_dist(lstsq_predict(w_hand, both["z"][:, k]), both["hand"][:, k]),
            "goal_to_hand_slope_xyz": rounded(np.diag(w_goal[:3]), 3),
            "hand_to_goal_heldout_m": median_dist(te["hand"][:, k], te["goal"]),
            "hand_to_goal_heldout_abs_xyz_m": rounded(np.median(np.abs(te["hand"][:, k] - te["goal"]), 0)),
            "heldout_success_goal_x_near": float(te["success"][near, k].mean()) if near.any() else None,
            "heldout_success_goal_x_far": float(te["success"][~near, k].mean()) if (~near).any() else None,
        })
    spread = [rounded(both["hand"][:, k].std(0)) for k in range(k_max + 1)]
    goal_std = rounded(both["goal"].std(0))
    baseline = median_dist(tr["goal"].mean(0), te["goal"])
    print(f"{ckpt}: {len(tr['goal'])} training and {len(te['goal'])} held-out goals; "
          f"mean-training-goal guess: {baseline:.3f} m from a held-out goal (median)")
    print("round  held-out success  posterior->goal held-out / train  z->hand  goal->hand slope (x, y, z)")
    for r in rows:
        print(f"{r['round']:>5}  {r['heldout_success'] * 100:15.0f}%  {r['posterior_to_goal_heldout_m']:14.3f} / "
              f"{r['posterior_to_goal_train_m']:.3f} m  {r['z_to_hand_m']:6.3f} m  {r['goal_to_hand_slope_xyz']}")
    print(f"held-out goals with |x - mean training x| < 5 cm: {int(near.sum())} of {len(near)}; success near / far "
          "by round: " + ", ".join(f"{r['heldout_success_goal_x_near'] * 100:.0f}% / "
                                   f"{r['heldout_success_goal_x_far'] * 100:.0f}%" for r in rows if split))
    print("final hand position std (x, y, z) by round, 0 = prior z: " + "; ".join(str(v) for v in spread)
          + f"; goals: {goal_std}")
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": str(ckpt), "seed": args.seed,
                                              "mean_goal_guess_m": baseline, "heldout_goals_x_near": int(near.sum()),
                                              "hand_std_xyz_by_round": spread,
                                              "goal_std_xyz": goal_std,
                                              "rounds": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
