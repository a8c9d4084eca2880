"""ddpm_core: the diffusion math, models, data, training and sampling behind DDPM Explorer (no UI here)."""

from ddpm_core.diffusion import Diffusion, Posterior, Step, extract
from ddpm_core.schedules import SCHEDULES, Schedule, make_schedule

__all__ = ["SCHEDULES", "Diffusion", "Posterior", "Schedule", "Step", "extract", "make_schedule"]
