"""MNIST at 28×28 on a CPU: MNIST's idx files and the test-set split (ddpm_core.idx), the patch UNet, the precision a
run asks for (ddpm_core.devices), and the `cpu-mnist` recipe end to end — trained by the CLI on small idx files the
test writes itself, read through torchvision's own MNIST loader, then sampled by the CLI. Nothing is downloaded."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from ddpm_core import runs
from ddpm_core.data import load_dataset
from ddpm_core.devices import cpu_native_bf16, precision, uses_bf16
from ddpm_core.idx import TEST_IMAGES, TEST_LABELS, read_idx, read_test_set, split_test_set, write_idx
from ddpm_core.models import PRESETS, ModelConfig, build_model, count_parameters
from ddpm_core.recipes import recipe_config
from tests.runs_helpers import call_cli
from tests.test_models import perturbed


def mnist_test_files(root, n: int, packed: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random 28×28 'test' images and labels 0 … 9 in turn, as torchvision's MNIST/raw holds them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in ((TEST_IMAGES, images), (TEST_LABELS, labels)):
        write_idx(raw / name, array)
        if packed:
            (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
            (raw / name).unlink()
    return images, labels


# ----------------------------------------------------------------------------------------------------------------
# idx files


@pytest.mark.parametrize("packed", [False, True])
def test_idx_files_round_trip_and_torchvision_reads_what_we_write(tmp_path, packed):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, labels = mnist_test_files(tmp_path, 12, packed=packed)
    got_images, got_labels = read_test_set(tmp_path)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    write_idx(tmp_path / "again", images)
    assert np.array_equal(read_image_file(str(tmp_path / "again")).numpy(), images)
    write_idx(tmp_path / "labels", labels)
    assert np.array_equal(read_label_file(str(tmp_path / "labels")).numpy(), labels)


def test_a_file_that_is_not_idx_is_refused_with_its_name(tmp_path):
    (tmp_path / "x").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        read_idx(tmp_path / "x")
    write_idx(tmp_path / "short", np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(ValueError, match="the header says"):
        read_idx(tmp_path / "short")
    (tmp_path / "cut").write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # cut inside the three sizes
    with pytest.raises(ValueError, match="ends inside its header"):
        read_idx(tmp_path / "cut")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(8))[:-6])
    with pytest.raises(ValueError, match="cannot be unpacked"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(ValueError, match="MNIST's test set is not under"):
        read_test_set(tmp_path / "nowhere")


def test_the_test_set_is_split_in_index_order_and_read_by_the_project_loader(tmp_path):
    images, labels = mnist_test_files(tmp_path / "src", 50)
    root = split_test_set(tmp_path / "src", tmp_path / "split", train_end=40)
    train = load_dataset("mnist", data_root=root)  # torchvision's MNIST(train=True) on the files written
    held = load_dataset("mnist", data_root=root, train=False)
    as_uint8 = lambda x: ((x[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8)  # noqa: E731
    assert np.array_equal(as_uint8(train.x), images[:40]) and np.array_equal(as_uint8(held.x), images[40:])
    assert train.y.tolist() == labels[:40].tolist() and train.x.shape[1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="train_end must split"):
        split_test_set(tmp_path / "src", tmp_path / "bad", train_end=50)


# ----------------------------------------------------------------------------------------------------------------
# The patch UNet


def test_the_patch_unet_keeps_the_image_shape_and_each_output_patch_sees_the_whole_image():
    torch.manual_seed(0)
    config = ModelConfig(in_channels=1, image_size=28, **PRESETS["patch"])
    model = perturbed(build_model(config)).eval()  # zero-initialised branches would hide every dependence
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    out = model(x, torch.tensor([10, 500]))
    assert out.shape == x.shape
    out[0, 0, 0, 0].backward()  # the top-left pixel of sample 0 …
    grad = x.grad[0, 0].abs()
    assert grad[27, 27] > 0 and x.grad[1].abs().max() == 0  # … depends on the far corner (attention), not on sample 1


def test_patch_sizes_must_divide_the_image_with_room_for_the_levels():
    assert count_parameters(build_model(ModelConfig(in_channels=1, image_size=8, **PRESETS["patch"]))) > 0
    with pytest.raises(ValueError, match="patch_size must be 1, 2 or 4"):
        ModelConfig(in_channels=1, image_size=28, patch_size=3)
    with pytest.raises(ValueError, match="cannot be halved"):
        ModelConfig(in_channels=1, image_size=28, patch_size=4, channel_mults=(1, 2))


def test_a_checkpoint_without_patch_size_loads_as_before():
    from tests.test_page_sample import DIGITS

    ckpt = runs.load_checkpoint(DIGITS)
    assert ckpt.model_config.patch_size == 1
    assert ckpt.config.cpu_bf16 is False  # a field added later takes its default


# ----------------------------------------------------------------------------------------------------------------
# Precision


def test_bf16_is_used_on_cuda_when_asked_and_on_a_cpu_only_where_it_is_native():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert uses_bf16(cuda, True, False) and not uses_bf16(cuda, False, True)
    assert not uses_bf16(cpu, True, False)  # mixed_precision is CUDA's
    assert not uses_bf16(torch.device("mps"), True, True)


def test_the_precision_context_is_what_the_config_says():
    conv = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(1, 1, 8, 8)
    with precision(torch.device("cpu"), recipe_config("cpu-digits")):
        assert conv(x).dtype == torch.float32
    with precision(torch.device("cpu"), recipe_config("cpu-mnist")):
        assert conv(x).dtype == (torch.bfloat16 if cpu_native_bf16() else torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# The recipe end to end


def test_the_cpu_mnist_recipe_trains_and_samples_on_idx_files_through_the_cli(tmp_path):
    mnist_test_files(tmp_path / "src", 60)
    root = split_test_set(tmp_path / "src", tmp_path / "data", train_end=50)
    run = tmp_path / "run"
    done = call_cli("train", "--recipe", "cpu-mnist", "--data-root", root, "--steps", 3, "--batch-size", 16,
                   "--preview-every", 0, "--checkpoint-every", 0, "--log-every", 1, "--out", run,
                   runs_root=tmp_path / "runs")  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = json.loads((run / runs.STATUS).read_text())
    assert status["state"] == "done" and status["step"] == 3
    ckpt = runs.load_checkpoint(run)
    assert ckpt.model_config.patch_size == 2 and ckpt.sample_shape == (1, 28, 28) and ckpt.config.cpu_bf16
    png = tmp_path / "out.png"
    drawn = call_cli("sample", "--checkpoint", run, "--sampler", "ddim", "--steps", 3, "--n", 4, "--png", png,
                    runs_root=tmp_path / "runs")  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    assert png.stat().st_size > 0


def test_the_cpu_mnist_recipe_says_how_to_get_mnist_when_it_is_not_on_disk(tmp_path):
    done = call_cli("train", "--recipe", "cpu-mnist", "--data-root", tmp_path / "empty", "--steps", 1,
                   "--out", tmp_path / "run", runs_root=tmp_path / "runs")  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MNIST not found") and "--download" in lines[0]
