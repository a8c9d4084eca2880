"""TrainConfig: the one description of a training run, shared by the CLI, the app and every saved checkpoint.

CLI flags are derived from its fields (``--batch-size`` for ``batch_size``), unknown keys in JSON are rejected, and
it is saved as ``config.json`` in the run folder and inside every checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ddpm_core.data import DATASETS, POINT_DATASETS, Dataset, load_dataset
from ddpm_core.diffusion import PREDICTION_TYPES
from ddpm_core.model_limits import check_model_size
from ddpm_core.models import PRESETS, ModelConfig
from ddpm_core.schedules import SCHEDULES, make_schedule


@dataclass
class TrainConfig:
    # data
    dataset: str = "digits"  # digits (embedded), mnist, fashion_mnist, cifar10, folder, or a 2D toy
    data_root: str = "data"  # where torchvision data sets live (and are downloaded to with --download)
    download: bool = False  # let torchvision download mnist/fashion_mnist/cifar10 (needs internet)
    folder: str = ""  # dataset=folder: a folder of images, optionally one subfolder per class
    image_size: int = 0  # 0: the data set's own (28 for MNIST-like; 32 pads them like the course); else resize
    resize_mode: str = "pad"  # how 28-px MNIST-like images reach 32: pad (2 px of background) or resize
    channels: int = 0  # 0: the data set's own; 1 grayscale, 3 RGB
    classes: list[str] = field(default_factory=list)  # keep only these classes (labels or names); empty: all
    n_points: int = 10_000  # 2D toys: how many points to draw
    # model
    model: str = "auto"  # preset: auto (tiny UNet for images, mlp for points), tiny, patch, small, mlp
    base_channels: int = 0  # 0: the preset's width
    dropout: float = -1.0  # < 0: the preset's
    # diffusion
    T: int = 1000  # diffusion steps
    schedule: str = "linear"  # one of ddpm_core.SCHEDULES
    schedule_params: dict[str, float] = field(default_factory=dict)  # e.g. {"beta_end": 0.02}; missing: defaults
    rescale_zero_terminal_snr: bool = False  # rescale β so that ᾱ_T = 0 (Lin et al. 2024)
    prediction_type: str = "eps"  # what the network predicts: eps (Ho et al.'s), x0, or v (Salimans & Ho 2022)
    loss_weighting: str = "none"  # none, or min_snr: weight each t by min(SNR_t, γ) (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # γ of min_snr
    # classes and fine-tuning
    class_conditional: bool = False  # learn p(x_0 | class) too, for classifier-free guidance (Ho & Salimans 2022)
    label_dropout: float = 0.1  # share of labels swapped for the null label while training a conditional model
    init_from: str = ""  # fine-tune: start from this checkpoint's weights (run folder or .safetensors)
    # optimisation
    lr: float = 2e-3  # AdamW learning rate after the warm-up
    batch_size: int = 128  # examples per optimiser step
    steps: int = 3000  # optimiser steps (ignored when epochs > 0)
    epochs: int = 0  # > 0: train this many passes over the data instead
    warmup: int = 100  # linear lr warm-up, in steps
    grad_clip: float = 1.0  # max gradient norm; 0: off
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    ema_decay: float = 0.999  # the paper used 0.9999 over 800k steps; short runs need a shorter memory
    seed: int = 0  # seeds the initial weights, the data order and the noise
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, mps
    mixed_precision: bool = True  # bf16 autocast on CUDA; ignored elsewhere
    cpu_bf16: bool = False  # bf16 autocast on a CPU that has it natively (AVX-512 BF16, AMX); float32 on others
    # logging and outputs
    log_every: int = 50  # steps between metrics.jsonl lines
    preview_every: int = 500  # steps between preview grids (raw and EMA); 0: only at the end
    preview_n: int = 64  # samples in a preview grid
    preview_steps: int = 50  # DDIM steps for previews
    checkpoint_every: int = 1000  # steps between checkpoints; 0: only at the end
    evaluate_n: int = -1  # samples scored into evaluation.json at the end; -1: 1000 if cheap (digits, 2D, CUDA), 0: off
    name: str = ""  # run name under the runs folder; empty: dataset + time
    out: str = ""  # an explicit run folder (CLI); overrides name

    def __post_init__(self):
        validate(self)

    # ------------------------------------------------------------------------------------------------------------

    @property
    def is_points(self) -> bool:
        return self.dataset in POINT_DATASETS

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(field_names())}")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config_file(path))

    def replace(self, **changes) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def load_data(self) -> Dataset:
        """The training data these settings describe (raises DatasetError saying what is missing)."""
        return load_dataset(
            self.dataset,
            data_root=self.data_root,
            download=self.download,
            folder=self.folder or None,
            image_size=self.image_size or None,
            resize_mode=self.resize_mode,
            channels=self.channels or None,
            classes=self.classes or None,
            n_points=self.n_points,
            seed=self.seed,
        )

    def make_schedule(self):
        return make_schedule(
            self.schedule, self.T, rescale_zero_terminal_snr=self.rescale_zero_terminal_snr, **self.schedule_params
        )

    def model_config(self, in_channels: int, image_size: int, num_classes: int = 0) -> ModelConfig:
        """The network for data of this shape: the preset, with width and dropout overrides."""
        preset = self.model if self.model != "auto" else ("mlp" if self.is_points else "tiny")
        settings = {**PRESETS[preset], "prediction": self.prediction_type}
        if self.base_channels:
            settings["base_channels"] = self.base_channels
        if self.dropout >= 0:
            settings["dropout"] = self.dropout
        if settings.get("kind") == "mlp":
            return ModelConfig(in_channels=in_channels, num_classes=num_classes, **settings)
        return ModelConfig(in_channels=in_channels, image_size=image_size, num_classes=num_classes, **settings)

    def evaluation_samples(self, device: str) -> int:
        """How many samples the end-of-run evaluation scores: evaluate_n, with -1 resolved to 1000 where that takes
        seconds (the embedded digits, 2D toys, any CUDA run) and 0 (off) for larger images on a CPU."""
        if self.evaluate_n >= 0:
            return self.evaluate_n
        cheap = self.dataset == "digits" or self.is_points or device.startswith("cuda")
        return 1000 if cheap else 0

    def total_steps(self, dataset_size: int) -> int:
        return self.epochs * math.ceil(dataset_size / self.batch_size) if self.epochs > 0 else self.steps


def read_config_file(path: str | Path) -> dict:
    """The settings a JSON config file gives (only those: a base for flags, or an overlay on a recipe); ValueError
    for a missing file, invalid JSON, or anything but an object. Field names are checked by TrainConfig.from_dict."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a JSON object")
    return d


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _positive(c: TrainConfig, *names: str) -> None:
    for n in names:
        if getattr(c, n) <= 0:
            raise ValueError(f"{n} must be positive, got {getattr(c, n)}")


def validate(c: TrainConfig) -> None:
    """Raise ValueError naming the first setting that cannot work, and why."""
    for f in fields(c):
        value = getattr(c, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")
    if c.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {c.dataset!r}; valid: {', '.join(DATASETS)}")
    if c.model not in ("auto", *PRESETS):
        raise ValueError(f"unknown model preset {c.model!r}; valid: auto, {', '.join(PRESETS)}")
    if c.is_points and c.model not in ("auto", "mlp"):
        raise ValueError(f"2D point data sets need the mlp model, got model={c.model!r}")
    unets = [n for n, p in PRESETS.items() if p.get("kind", "unet") == "unet"]
    if not c.is_points and c.model not in ("auto", *unets):
        raise ValueError(f"image data sets need a UNet preset, got model={c.model!r}; valid: auto, {', '.join(unets)}")
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {c.schedule!r}; valid names: {', '.join(SCHEDULES)}")
    _positive(c, "lr", "batch_size", "log_every", "preview_n", "preview_steps", "n_points")
    if c.epochs < 0 or (c.epochs == 0 and c.steps <= 0):
        raise ValueError(f"steps must be positive (or epochs > 0), got steps={c.steps}, epochs={c.epochs}")
    # upper bounds on everything that scales time or memory: a shared server runs strangers' config files
    for n, hi in (("batch_size", 4096), ("steps", 1_000_000), ("epochs", 10_000), ("preview_n", 4096),
                  ("n_points", 1_000_000), ("image_size", 64)):  # fmt: skip
        if getattr(c, n) > hi:
            raise ValueError(f"{n} must be at most {hi}, got {getattr(c, n)}")
    if c.base_channels and not 8 <= c.base_channels <= 1024:
        raise ValueError(f"base_channels must be 0 (the preset's) or lie in [8, 1024], got {c.base_channels}")
    if c.lr > 1.0:
        raise ValueError(f"lr must be at most 1, got {c.lr}")
    if not 0.0 <= c.ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {c.ema_decay}")
    for n in ("warmup", "grad_clip", "weight_decay", "preview_every", "checkpoint_every", "image_size"):
        if getattr(c, n) < 0:
            raise ValueError(f"{n} must be ≥ 0, got {getattr(c, n)}")
    if c.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be eps, x0 or v, got {c.prediction_type!r}")
    if c.loss_weighting not in ("none", "min_snr"):
        raise ValueError(f"loss_weighting must be none or min_snr, got {c.loss_weighting!r}")
    _positive(c, "min_snr_gamma")
    if not 0.0 <= c.label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {c.label_dropout}")
    if c.class_conditional and c.is_points:
        raise ValueError(f"class_conditional needs labelled images; {c.dataset} is a 2D toy without classes")
    if not -1 <= c.evaluate_n <= 10_000 or c.evaluate_n == 1:
        raise ValueError(f"evaluate_n must be -1 (auto), 0 (off) or 2 to 10000, got {c.evaluate_n}")
    if c.resize_mode not in ("pad", "resize"):
        raise ValueError(f"resize_mode must be pad or resize, got {c.resize_mode!r}")
    if c.channels not in (0, 1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {c.channels}")
    _check_model_size(c)
    c.make_schedule()  # raises ValueError naming a bad schedule parameter (T < 2, β outside (0, 1), …)
    if c.preview_steps > c.T:
        raise ValueError(f"preview_steps ({c.preview_steps}) cannot exceed T ({c.T})")
    if c.dataset == "folder" and not c.folder:
        raise ValueError("dataset=folder needs --folder PATH, a folder of images")


def _check_model_size(c: TrainConfig) -> None:
    """Refuse a preset and width too large to build, before any data is loaded: the data's shape is not known yet,
    so this assumes the largest built-in one (3 × 32 × 32, or image_size when given)."""
    preset = c.model if c.model != "auto" else ("mlp" if c.is_points else "tiny")
    settings = {**ModelConfig().to_dict(), **PRESETS[preset], "in_channels": 2 if c.is_points else c.channels or 3}
    settings["image_size"] = c.image_size or 32
    if c.base_channels:
        settings["base_channels"] = c.base_channels
    check_model_size(types.SimpleNamespace(**settings))


# ----------------------------------------------------------------------------------------------------------------
# CLI flags derived from the fields


def _base_type(annotation) -> type:
    hint = typing.get_type_hints(TrainConfig)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.GenericAlias):
        return typing.get_origin(hint)
    return hint


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"beta_end\": 0.02}'")
    return value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, defaulting to None so that only the flags given override a base config."""
    hints = typing.get_type_hints(TrainConfig)
    comments = _field_comments()
    for f in fields(TrainConfig):
        kind = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f"{comments.get(f.name, '')} (default: {default!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is list:
            parser.add_argument(flag, type=lambda s: [p for p in s.split(",") if p], default=None, help=help_text)
        elif kind is dict:
            parser.add_argument(flag, type=_json_object, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace, base: TrainConfig | dict | None = None) -> TrainConfig:
    """The base config (or defaults) with every flag that was given applied on top."""
    d = base.to_dict() if isinstance(base, TrainConfig) else dict(base or {})
    d.update({n: getattr(args, n) for n in field_names() if getattr(args, n, None) is not None})
    return TrainConfig.from_dict(d)


def _field_comments() -> dict[str, str]:
    """The trailing comment of each field above, used as its --help text."""
    import inspect

    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest and name.isidentifier():
            out[name] = rest.split("#", 1)[1].strip()
    return out
