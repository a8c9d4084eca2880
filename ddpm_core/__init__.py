"""ddpm_core: the diffusion math, models, data, training and sampling behind DDPM Explorer (no UI here).

The core is layered: a module imports only from its own layer and the layers above it in this list (the math never
imports a network, sampling never imports the trainer). tests/test_layers.py holds every module to it and checks
that no import cycle exists. Where each of Ho et al.'s equations lives: ddpm_core/equations.py.

| layer                 | modules                                                                                |
|-----------------------|----------------------------------------------------------------------------------------|
| support               | fileio (atomic writes), devices (CPU/GPU, bf16), threads (torch's thread count)        |
| the math              | schedules, diffusion, objectives, equations, schedule_report                           |
| networks              | model_limits, models, ema                                                              |
| data                  | toys, data, idx, images                                                                |
| runs                  | config, recipes, runs (checkpoints), run_history, run_lock                             |
| sampling and pictures | pictures, gif, sample, sampling_cost, compare, forward, edit_inputs, edit              |
| evaluation            | metrics, classifier, evaluate, importance                                              |
| likelihood, exercise  | likelihood_ode, likelihood, likelihood_cli, likelihood_run, exercise_checks, exercises |
| training              | distributed, sharing, trainer (the library), train (the CLI)                           |

The CLIs: python -m ddpm_core.train | sample | edit | evaluate | likelihood | classifier | exercises.
"""

from ddpm_core.diffusion import Diffusion, Posterior, Step, extract
from ddpm_core.schedules import SCHEDULES, Schedule, make_schedule

LAYERS = {  # the table above, lowest first
    "support": ("fileio", "devices", "threads"),
    "the math": ("schedules", "diffusion", "objectives", "equations", "schedule_report"),
    "networks": ("model_limits", "models", "ema"),
    "data": ("toys", "data", "idx", "images"),
    "runs": ("config", "recipes", "runs", "run_history", "run_lock"),
    "sampling and pictures": (
        "pictures",
        "gif",
        "sample",
        "sampling_cost",
        "compare",
        "forward",
        "edit_inputs",
        "edit",
    ),
    "evaluation": ("metrics", "classifier", "evaluate", "importance"),
    "likelihood, exercise": (
        "likelihood_ode",
        "likelihood",
        "likelihood_cli",
        "likelihood_run",
        "exercise_checks",
        "exercises",
    ),
    "training": ("distributed", "sharing", "trainer", "train"),
}

__all__ = ["LAYERS", "SCHEDULES", "Diffusion", "Posterior", "Schedule", "Step", "extract", "make_schedule"]
