"""The run folder: the only interface between the trainer and the app.

runs/<name>/
    config.json        the TrainConfig
    metrics.jsonl      one JSON line per log interval
    status.json        {"state": running|done|stopped|failed, "pid", "step", "total_steps", "error", ...}
    model.safetensors  raw weights     } each self-contained: the TrainConfig, data shape and step ride in the
    ema.safetensors    EMA weights     } safetensors metadata, so one file is enough to sample
    training_state.pt  optimiser, lr schedule and step (tensors only: loaded with weights_only=True)
    previews/          sample grids, step_000500_raw.png and step_000500_ema.png
    evaluation.json    sample quality of the final EMA weights (ddpm_core.evaluate), written when the run ends
    STOP               created by the app to ask the trainer to stop cleanly
    BUSY               touched by the app while it computes: a trainer on the CPU takes one thread fewer

Every file is written atomically (temp file in the same folder, then os.replace): a crash or kill leaves the
previous version intact. Checkpoints never unpickle arbitrary objects.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ddpm_core.config import TrainConfig
from ddpm_core.data import Dataset
from ddpm_core.fileio import atomic_write
from ddpm_core.models import ModelConfig, build_model

CONFIG, METRICS, STATUS = "config.json", "metrics.jsonl", "status.json"
MODEL, EMA, STATE, PREVIEWS, STOP = "model.safetensors", "ema.safetensors", "training_state.pt", "previews", "STOP"
EVALUATION = "evaluation.json"
JOB = "job.json"  # a run an engine (a Ray cluster) trains: which job, on which cluster (explorer/ray_backend.py)
JOB_ENV = "DDPM_EXPLORER_JOB"  # set by that engine's entrypoint: the trainer writes it into status.json as "job"
FORMAT = "ddpm-explorer/1"
MAX_NAME = 64


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says which file and why (shown as-is, no traceback)."""


def default_runs_root() -> Path:
    return Path(os.environ.get("DDPM_EXPLORER_RUNS", "runs"))


def sanitize_run_name(name: str) -> str:
    """A safe folder name: letters, digits, '.', '_' and '-' only, no leading dots, at most 64 characters.

    "../x" → "x" and "/etc/passwd" → "etc-passwd": nothing escapes the runs folder. Raises ValueError when nothing
    usable is left (empty, or only symbols).
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip(".-")[:MAX_NAME].rstrip(".-")
    if not slug:
        raise ValueError(f"run name {name!r} has no letters or digits; use e.g. 'digits-linear'")
    return slug


def run_dir_for(config: TrainConfig, runs_root: Path | None = None) -> Path:
    """config.out when given (the CLI's explicit folder), else <runs root>/<sanitised name or dataset-time>."""
    if config.out:
        return Path(config.out)
    name = config.name or f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return (runs_root or default_runs_root()) / sanitize_run_name(name)


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2))


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):  # missing, its folder deleted, a folder itself; half-written or not UTF-8 JSON
        return default


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_metrics(run_dir: Path) -> list[dict]:
    """All complete lines of metrics.jsonl (a line being written right now is skipped)."""
    try:  # a garbled byte costs its line only; a vanished run folder has no records
        lines = (Path(run_dir) / METRICS).read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the records up to step: a resume restarts there, and a kill may have left later ones (or half a line)."""
    if (Path(run_dir) / METRICS).exists():
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
        write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def write_status(run_dir: Path, state: str, **fields) -> dict:
    status = {**read_json(Path(run_dir) / STATUS, {}), **fields, "state": state, "updated": time.time()}
    write_json(Path(run_dir) / STATUS, status)
    return status


def read_status(run_dir: Path) -> dict:
    """status.json as a dict; {} (state unknown) when it is missing, half-written or not an object."""
    for _ in range(2):  # one more look: a writer that is not atomic (or a copy) may be caught mid-write
        if isinstance(status := read_json(Path(run_dir) / STATUS), dict):
            return status
    return {}


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_weights(
    path: Path, model: nn.Module, config: TrainConfig, model_config: ModelConfig, step: int, data_info: dict
) -> None:
    """One self-contained safetensors file: weights plus the configs, data shape and step as metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "train_config": config.to_json(),
        "model_config": json.dumps(model_config.to_dict()),
        "data": json.dumps(data_info),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def data_info(ds: Dataset) -> dict:
    """What a checkpoint needs to know of its data: sample shape, kind and class names."""
    return {"name": ds.name, "kind": ds.kind, "shape": list(ds.sample_shape), "classes": ds.classes}


class Checkpoint:
    """A loaded checkpoint: the network (eval mode, on CPU), its configs, the data shape and the step."""

    def __init__(
        self, path: Path, model: nn.Module, config: TrainConfig, model_config: ModelConfig, step: int, data: dict
    ):
        self.path, self.model, self.config, self.model_config, self.step, self.data = (
            path,
            model,
            config,
            model_config,
            step,
            data,
        )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data["shape"])

    @property
    def classes(self) -> list[str]:
        """The class names of its data, index = label ([] when unlabelled)."""
        return [str(c) for c in self.data.get("classes") or []]


def resolve_checkpoint(path: str | Path, prefer_ema: bool = True) -> Path:
    """A run folder → its ema.safetensors (or model.safetensors); a file → itself."""
    path = Path(path)
    if path.is_dir():
        for name in (EMA, MODEL) if prefer_ema else (MODEL, EMA):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no {EMA} or {MODEL}: has the run saved a checkpoint yet?")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, prefer_ema: bool = True) -> Checkpoint:
    """Load a run folder or a .safetensors file. Raises CheckpointError with a clear message when the file is
    truncated, not a safetensors file (e.g. a pickle: never unpickled), lacks its config, or its weights do not fit
    the architecture its config describes."""
    file = resolve_checkpoint(path, prefer_ema)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{file} is not a readable safetensors checkpoint (truncated or another format): {e}"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} has no DDPM Explorer metadata (format {FORMAT!r}): it lacks the config needed to rebuild the model"
        )
    try:
        config = TrainConfig.from_dict(json.loads(meta["train_config"]))
        model_config = ModelConfig.from_dict(json.loads(meta["model_config"]))
        data = json.loads(meta["data"])
        step = int(meta["step"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{file} has a missing or invalid config in its metadata: {e}") from None
    takes = (
        [model_config.in_channels]
        if model_config.kind == "mlp"
        else [model_config.in_channels] + 2 * [model_config.image_size]
    )  # (2,) points or (C, H, W) images: any other sample shape would fail inside the network, mid-sampling
    if not isinstance(data, dict) or data.get("shape") != takes:
        shape = data.get("shape") if isinstance(data, dict) else data
        raise CheckpointError(f"{file}: its data shape {shape} does not fit its model, which takes {takes}")
    try:  # only now, with the config's size checked (ModelConfig refuses a network too large), read the weights
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors checkpoint (truncated?): {e}") from None
    model = build_model(model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise CheckpointError(
            f"{file}: the weights do not fit the architecture in its config ({' '.join(first)})"
        ) from None
    return Checkpoint(file, model.eval(), config, model_config, step, data)


def save_training_state(path: Path, step: int, optimizer, lr_schedule, rng: torch.Tensor) -> None:
    state = {"step": step, "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(), "rng": rng}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    """Tensors and plain containers only (weights_only=True): a pickle that carries code is refused, never run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run cannot be resumed") from None
    except Exception as e:  # UnpicklingError, truncated zip, ...: all mean "not a state we wrote"
        raise CheckpointError(
            f"{path} is not a training state this tool wrote ({type(e).__name__}: {_why(e)})"
        ) from None


def _why(e: Exception) -> str:
    """One line for an `error:` line or st.error: torch's weights_only refusal spans lines, with colour codes, and
    advises allowlisting the object: its first sentence (or the refusal) says enough."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()]
    refused = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    return (refused or [line for line in lines if line] or [""])[0].split(". ")[0]  # the first sentence
