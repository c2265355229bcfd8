"""metarl: meta-reinforcement learning on Meta-World (MAML-TRPO, RL²-PPO, PEARL, Reptile).

Command line: `metarl train | eval | plot | report | bench` (metarl/app/cli.py). From Python
(metarl/app/api.py, imported on first use so that `import metarl` stays cheap):

    metarl.train(config, overrides=(), hooks=None, ...) -> RunOutcome     # metarl train CONFIG --set ...
    metarl.resume(run_dir, overrides=(), ...) -> RunOutcome               # metarl train --resume RUN_DIR
    metarl.evaluate(checkpoint_or_run_dir, tasks_per_class=0, ...) -> AdaptationCurve   # metarl eval

The pieces under them: metarl.training.run.Run (a run dir's life), metarl.training.loop.train (the
loop) and metarl.training.hooks (progress, evaluations, best.pt, final evaluation, video).
"""
from __future__ import annotations

from typing import Any

__all__ = ["train", "resume", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from metarl.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")
