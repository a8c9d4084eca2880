"""A small CNN classifier trained by the project, whose penultimate layer is the feature space for the Fréchet
distance of MNIST-like samples (pixel-space FD is a poor judge of 28×28 digits: a 1-px shift costs more than
visible noise).

It is trained once per data set on the user's own copy (the train split), and saved beside the data:
<data_root>/ddpm-explorer/<dataset>-<size>px-classifier.safetensors. evaluate uses it when it is there and falls back
to pixel-space FD when it is not.

CLI: python -m ddpm_core.classifier --dataset mnist --data-root data [--image-size 32] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from ddpm_core.data import DatasetError, load_dataset
from ddpm_core.fileio import atomic_write

FEATURE_DIM = 128
CLASSIFIER_DATASETS = ("mnist", "fashion_mnist", "cifar10")


class SmallCNN(nn.Module):
    """(B, C, H, W) in [-1, 1] → logits (B, classes); features() gives the (B, 128) penultimate activations."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.GroupNorm(8, 128), nn.SiLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(128 * 16, FEATURE_DIM), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def classifier_path(data_root: str | Path, dataset: str, image_size: int) -> Path:
    return Path(data_root) / "ddpm-explorer" / f"{dataset}-{image_size}px-classifier.safetensors"


def train_classifier(
    dataset: str,
    data_root: str | Path,
    image_size: int | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    device: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[Path, float]:
    """Train on the train split, report accuracy on the test split, save atomically. Returns (path, accuracy)."""
    if dataset not in CLASSIFIER_DATASETS:
        raise ValueError(f"feature classifiers are for {', '.join(CLASSIFIER_DATASETS)}, not {dataset!r}")
    torch.manual_seed(seed)
    train = load_dataset(dataset, data_root=data_root, image_size=image_size, train=True)
    test = load_dataset(dataset, data_root=data_root, image_size=image_size, train=False)
    model = SmallCNN(train.x.shape[1], len(train.classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(train.x), generator=g).split(batch_size):
            loss = F.cross_entropy(model(train.x[idx].to(device)), train.y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    accuracy = _accuracy(model, test.x, test.y, device)
    size = train.x.shape[-1]
    path = classifier_path(data_root, dataset, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": dataset,
        "image_size": str(size),
        "channels": str(train.x.shape[1]),
        "classes": json.dumps(train.classes),
        "test_accuracy": f"{accuracy:.4f}",
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path, accuracy


@torch.no_grad()
def _accuracy(model: SmallCNN, x: Tensor, y: Tensor, device: str) -> float:
    model.eval()
    correct = sum(
        (model(xb.to(device)).argmax(1).cpu() == yb).sum().item()
        for xb, yb in zip(x.split(512), y.split(512), strict=True)
    )
    return correct / len(y)


def load_feature_extractor(data_root: str | Path, dataset: str, image_size: int) -> Callable[[Tensor], Tensor] | None:
    """features(x (B, C, H, W) in [-1, 1]) → (B, 128) from the saved classifier, or None when there is none (or it
    is unreadable: evaluation then falls back to pixel-space FD rather than failing)."""
    path = classifier_path(data_root, dataset, image_size)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        model = SmallCNN(int(meta["channels"]), len(json.loads(meta["classes"])))
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None
    model.eval()
    return torch.no_grad()(model.features)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ddpm_core.classifier",
        description="Train the feature classifier used for the FD of MNIST-like samples.",
    )
    p.add_argument("--dataset", choices=CLASSIFIER_DATASETS, required=True)
    p.add_argument("--data-root", default="data")
    p.add_argument("--image-size", type=int, default=0, help="0: the data set's own; use your models' size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from ddpm_core.devices import resolve_device

    try:
        device = str(resolve_device(args.device))
        path, accuracy = train_classifier(
            args.dataset, args.data_root, args.image_size or None, args.epochs, device=device
        )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"test accuracy {accuracy:.4f}; saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
