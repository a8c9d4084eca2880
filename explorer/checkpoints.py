"""The checkpoints the Sample page offers (the bundled ones, then every run's EMA and raw weights), loading one
once per file version (keyed on its path, mtime and size, so a run that writes a new checkpoint is reloaded), and its
settings as a table. Used by the Sample page and by the Train page's fine-tuning
picker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from ddpm_core import runs
from ddpm_core.devices import BF16Network, for_sampling, resolve_device
from ddpm_core.diffusion import Diffusion
from ddpm_core.models import describe_model
from explorer import links
from explorer.classroom import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
FIRST_BUNDLED = ("mnist", "digits")  # the default checkpoint, then the 8×8 digits; the others by name


@dataclass(frozen=True)
class Loaded:
    ckpt: runs.Checkpoint  # model on `device`, eval mode
    diffusion: Diffusion  # on the same device
    device: str

    @property
    def points(self) -> bool:
        return self.ckpt.config.is_points

    @property
    def T(self) -> int:
        return self.diffusion.num_timesteps

    @property
    def net(self) -> torch.nn.Module:
        """The network to sample with: bf16 where the checkpoint trained so and this CPU has it (for_sampling)."""
        return for_sampling(self.ckpt.model, self.ckpt.config)


# ----------------------------------------------------------------------------------------------------------------
# Choosing a checkpoint


def checkpoint_files(runs_root: Path) -> dict[str, str]:
    """{path: label} of the bundled checkpoints ("mnist", the default, and "digits" first), then of each run's EMA
    weights (the run's name) and raw weights ("<name> (raw weights)"). A label is also the page link's ?checkpoint=
    value: short, and unique ("runs/<label>" for a run named like a bundled checkpoint)."""
    first = {name: i for i, name in enumerate(FIRST_BUNDLED)}
    bundled = sorted(BUNDLED.glob("*.safetensors"), key=lambda p: (first.get(p.stem, len(first)), p.stem))
    found = {str(p): p.stem for p in bundled}
    if runs_root.is_dir():
        for run in sorted(p for p in runs_root.iterdir() if p.is_dir()):
            for name, suffix in ((runs.EMA, ""), (runs.MODEL, " (raw weights)")):
                if (run / name).is_file():
                    label = run.name + suffix
                    found[str(run / name)] = f"runs/{label}" if label in found.values() else label
    return found


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def _load(path: str, mtime_ns: int, size: int) -> Loaded:
    """One model per file version (mtime and size are only the cache key); raises CheckpointError."""
    ckpt = runs.load_checkpoint(path)
    device = resolve_device("auto")
    ckpt.model.to(device)
    return Loaded(ckpt, Diffusion(ckpt.config.make_schedule()).to(device), str(device))


def checkpoint_picker() -> Loaded | None:
    """A selectbox (key "checkpoint", bound to the link) over checkpoint_files, and the loaded checkpoint; None after
    an st.error that gives the CheckpointError's message."""
    root = runs.default_runs_root()
    files = checkpoint_files(root)
    if st.session_state.get("checkpoint") not in files:  # a run folder removed since the last run
        st.session_state.pop("checkpoint", None)
    path = links.selectbox("Checkpoint", list(files), key="checkpoint", format_func=files.get,
                           help=f"The bundled ones, then each run in {root}/: its EMA weights (the run's name) "
                           "and its raw weights")  # fmt: skip
    try:
        stat = Path(path).stat()
        return _load(path, stat.st_mtime_ns, stat.st_size)
    except (runs.CheckpointError, OSError) as e:
        st.error(f"Cannot use this checkpoint: {e}")
        return None


def config_table(loaded: Loaded) -> str:
    """The checkpoint's settings as a markdown table."""
    c, ckpt = loaded.ckpt.config, loaded.ckpt
    schedule = c.schedule + "".join(f", {k}={v:g}" for k, v in c.schedule_params.items())
    schedule += " + zero terminal SNR" if c.rescale_zero_terminal_snr else ""
    rows = {
        "data set": f"{c.dataset} — samples of shape {'×'.join(map(str, ckpt.sample_shape))}",
        "model": describe_model(ckpt.model_config, ckpt.model),
        "schedule": schedule,
        "T": f"{c.T:,}",
        "trained for": f"{ckpt.step:,} steps",
        "file": f"`{ckpt.path}`",
        "sampling on": loaded.device,
        "precision": "bf16 autocast (as it trained)" if isinstance(loaded.net, BF16Network) else "float32",
    }
    return "| setting | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows.items())
