"""Sample quality of a checkpoint, as JSON: the measure that fits its data set.

- digits: pixel-space Fréchet distance to the real digits (two halves of the real set: ≈ 0.07), plus the
  confidence and class histogram of a classifier trained on real digits;
- 2D toys: MMD and sliced Wasserstein distance to a fresh ground-truth sample;
- other images: pixel-space Fréchet distance to (up to 5000) real images of the same data set, and for MNIST-like
  sets and CIFAR-10 also the FD in the feature space of the project's classifier once it has been trained
  (python -m ddpm_core.classifier).

CLI: python -m ddpm_core.evaluate --checkpoint runs/digits --n 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from torch import Tensor, nn

from ddpm_core import metrics
from ddpm_core.classifier import CLASSIFIER_DATASETS, load_feature_extractor
from ddpm_core.config import TrainConfig
from ddpm_core.data import DatasetError, load_dataset, make_toy
from ddpm_core.diffusion import Diffusion
from ddpm_core.sample import Sampler, SamplingConfig, every_class, sample

REFERENCE_SEED = 12_345  # ground-truth toys for evaluation are drawn apart from the training seed
MAX_REFERENCE_IMAGES = 5000


def quality_metrics(samples: Tensor, config: TrainConfig, y: Tensor | None = None) -> dict:
    """The quality measures for samples (N, ...) of the data set config describes, as a JSON-ready dict; y: (N,)
    the classes a conditional model was asked for (scored on digits)."""
    if config.dataset == "digits" and tuple(samples.shape[1:]) == (1, 8, 8) and not config.classes:
        requested = None if y is None else y.cpu().numpy()
        return {"dataset": "digits", **metrics.digits_report(samples, requested)}
    if config.is_points:
        reference = make_toy(config.dataset, max(len(samples), 1000), seed=REFERENCE_SEED)
        return {"dataset": config.dataset, **metrics.points_report(samples, reference)}
    real = load_dataset(
        config.dataset,
        data_root=config.data_root,
        folder=config.folder or None,
        image_size=samples.shape[-1],
        resize_mode=config.resize_mode,
        channels=samples.shape[1],
        classes=config.classes or None,
        max_images=MAX_REFERENCE_IMAGES,
    )
    report = {"dataset": config.dataset, "pixel_fd": metrics.image_fd(samples, real.x), "n": len(samples)}
    if config.dataset in CLASSIFIER_DATASETS:
        features = load_feature_extractor(config.data_root, config.dataset, samples.shape[-1])
        report["feature_fd"] = metrics.image_fd(samples, real.x, features) if features else None
        if features is None:
            report["note"] = (
                "no feature classifier yet, so only pixel-space FD: train one with python -m ddpm_core.classifier "
                f"--dataset {config.dataset} --data-root {config.data_root} --image-size {samples.shape[-1]}"
            )
    return report


def evaluate_model(
    model: nn.Module,
    diffusion: Diffusion,
    config: TrainConfig,
    shape: tuple[int, ...],
    n: int,
    *,
    sampler: Sampler = "ddim",
    steps: int = 50,
    seed: int = 0,
    y: Tensor | None = None,
    guidance: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Draw n samples of shape (C, H, W) or (2,) and score them: the report of evaluation.json (sampler, its
    number of steps, sampling seconds, then quality_metrics). y: (n,) requested classes of a conditional model; on
    digits the report then says how often the classifier agrees ("class_accuracy"). progress(done, total) is called
    after each sampling step (it may raise to end the evaluation)."""
    result = sample(
        model,
        diffusion,
        n,
        shape,
        SamplingConfig(sampler=sampler, steps=steps, clip_x0=not config.is_points, guidance=guidance),
        seed=seed,
        y=y,
        record_every=10**9,
        progress=progress,
    )
    report = {
        "sampler": sampler,
        "steps": len(result.timesteps),
        "sampling_seconds": round(result.wall_time, 3),
        **quality_metrics(result.samples, config, y),
    }
    if y is not None:
        report["guidance"] = guidance
    return report


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.devices import for_sampling, resolve_device
    from ddpm_core.runs import CheckpointError, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m ddpm_core.evaluate", description="Sample a checkpoint and score it.")
    p.add_argument("--checkpoint", required=True, help="a run folder (EMA weights) or a .safetensors file")
    p.add_argument("--n", type=int, default=1000, help="number of samples to score")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=1.0, help="conditional models: the guidance scale (1: none)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if not 2 <= args.n <= 10_000:
        p.error(f"--n must lie in [2, 10000], got {args.n}")
    try:
        ckpt = load_checkpoint(args.checkpoint)
        device = resolve_device(args.device)
        scores = evaluate_model(
            for_sampling(ckpt.model.to(device), ckpt.config),
            Diffusion(ckpt.config.make_schedule()).to(device),
            ckpt.config,
            ckpt.sample_shape,
            args.n,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            y=every_class(args.n, ckpt.model_config.num_classes),
            guidance=args.guidance,
        )
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(ckpt.path), "step": ckpt.step, **scores}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
