"""The Forward process page's core, without Streamlit: ddpm_core.forward (x_t with a fixed ε, readouts, strips, the
chain against the closed form, pictures) and ddpm_core.images (sample photos, uploads, data sets on disk)."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_core import Diffusion, make_schedule
from ddpm_core.data import load_dataset, make_toy
from ddpm_core.forward import (
    CHAIN_ELEMENTS,
    CHAIN_WORK,
    MAX_CHAIN_STEPS,
    chain_vs_closed,
    fixed_noise,
    forward_frame,
    histogram,
    noised,
    readout,
    shown_frame,
    strip,
    strip_timesteps,
    work_copy,
)
from ddpm_core.images import (
    MAX_DECODED_BYTES,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    SAMPLE_PHOTOS,
    ImageError,
    datasets_on_disk,
    decode_image,
    sample_photo,
)
from ddpm_core.pictures import MAX_ROW_WIDTH, labelled_row, png_bytes, strip_picture, to_picture

SCHEDULES = [
    make_schedule("linear", 1000),
    make_schedule("cosine", 200),
    make_schedule("sigmoid", 50, rescale_zero_terminal_snr=True),
]


@pytest.fixture(scope="module")
def digit() -> torch.Tensor:
    return load_dataset("digits").x[7]  # (1, 8, 8)


def _eps_from(schedule, x0, x_t, t) -> torch.Tensor:
    """The forward equation solved for ε, in float64: (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t)."""
    ab = schedule.alpha_bars[t]
    return (x_t.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()


# ----------------------------------------------------------------------------------------------------------------
# x_t with one fixed ε


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_x_t_is_q_sample_with_the_seeds_noise(schedule, digit):
    for t in (0, schedule.T // 2, schedule.T - 1):
        eps = torch.randn(digit.shape, generator=torch.Generator().manual_seed(3))
        x_t = noised(schedule, digit, t, seed=3)
        assert x_t.shape == digit.shape and x_t.dtype == torch.float32
        assert torch.equal(x_t, Diffusion(schedule).q_sample(digit, t, eps))
        by_hand = schedule.alpha_bars[t].sqrt() * digit.double() + (1 - schedule.alpha_bars[t]).sqrt() * eps.double()
        assert torch.allclose(x_t.double(), by_hand, atol=1e-6)


def test_moving_t_changes_only_the_noise_level(digit):
    s = SCHEDULES[0]
    eps = [_eps_from(s, digit, noised(s, digit, t, seed=11), t) for t in (1, 10, 400, 999)]
    for e in eps[1:]:
        assert torch.allclose(e, eps[0], atol=1e-4)  # the same ε at every t
    assert torch.allclose(eps[0], fixed_noise(digit.shape, 11).double(), atol=1e-4)
    other = _eps_from(s, digit, noised(s, digit, 400, seed=12), 400)
    assert (other - eps[0]).abs().max() > 0.5  # another seed, another ε
    assert torch.equal(fixed_noise((3, 5), 4), fixed_noise((3, 5), 4))


def test_points_are_noised_the_same_way():
    s, cloud = SCHEDULES[1], make_toy("moons", 500)
    x_t = noised(s, cloud, 150, seed=0)
    assert x_t.shape == (500, 2)
    assert torch.allclose(_eps_from(s, cloud, x_t, 150), fixed_noise((500, 2), 0).double(), atol=1e-4)


def test_t_out_of_range_is_refused(digit):
    with pytest.raises(ValueError, match=r"t must be an integer index in \[0, 999\]"):
        noised(SCHEDULES[0], digit, 1000, seed=0)
    with pytest.raises(ValueError, match="t must be"):
        readout(SCHEDULES[0], -1)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_readouts_are_the_schedules_values(schedule):
    for t in (0, 1, schedule.T // 3, schedule.T - 1):
        r = readout(schedule, t)
        ab = schedule.alpha_bars[t].item()
        assert r.t == t and r.beta == schedule.betas[t].item() and r.alpha_bar == ab
        assert r.sqrt_alpha_bar == pytest.approx(math.sqrt(ab), rel=1e-12)
        assert r.sqrt_one_minus_alpha_bar == pytest.approx(math.sqrt(1 - ab), rel=1e-12)
        if ab > 0:  # the rescaled schedule ends at ᾱ_T = 0, SNR 0, log-SNR −∞
            assert r.snr == pytest.approx(ab / (1 - ab), rel=1e-9)
            assert r.log_snr == pytest.approx(math.log(ab / (1 - ab)), rel=1e-9, abs=1e-12)
    if schedule.rescale_zero_terminal_snr:
        assert readout(schedule, schedule.T - 1).snr == 0 and readout(schedule, schedule.T - 1).log_snr == -math.inf


def test_histogram_is_a_density_that_tends_to_the_normal(digit):
    h = histogram(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    width = h.edges[1] - h.edges[0]
    assert len(h.edges) == 80 + 1 and len(h.density) == 80 and h.edges[0] == -4 and h.edges[-1] == 4
    assert len(histogram(torch.zeros(64)).density) == 16 and len(histogram(torch.zeros(10), bins=5).density) == 5
    assert (h.density * width).sum() == pytest.approx(1, abs=1e-3)  # N(0, 1) leaves 6e-5 outside [-4, 4]
    assert np.abs(h.density - h.normal).max() < 0.02
    frame = forward_frame(SCHEDULES[0], digit, 0, seed=0)
    # at t = 0 x_t ≈ x_0 (± 0.01): the digit's background, x_0 = -1, lies in the two bins that meet at -1
    edges, density = frame.histogram.edges, frame.histogram.density
    i = np.searchsorted(edges, -1.0)
    assert edges[i] == -1 and (density[i - 1] + density[i]) * (edges[1] - edges[0]) >= (digit == -1).float().mean()
    assert frame.readout == readout(SCHEDULES[0], 0) and torch.equal(frame.x_t, noised(SCHEDULES[0], digit, 0, 0))


# ----------------------------------------------------------------------------------------------------------------
# Strips


@pytest.mark.parametrize("T", [2, 5, 8, 9, 50, 1000, 4001])
def test_strip_timesteps_spread_evenly_from_0_to_T_minus_1(T):
    ts = strip_timesteps(T)
    assert ts[0] == 0 and ts[-1] == T - 1 and len(ts) == min(8, T)
    gaps = np.diff(ts)
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1
    if T >= 3:
        assert strip_timesteps(T, 3) == [0, round((T - 1) / 2), T - 1]


def test_the_strip_holds_x_t_at_the_asked_ts(digit):
    s, ts = SCHEDULES[1], [0, 3, 77, 199]
    xs = strip(s, digit, ts, seed=5)
    assert xs.shape == (4, 1, 8, 8)
    for x, t in zip(xs, ts, strict=True):
        assert torch.allclose(x, noised(s, digit, t, seed=5), atol=1e-6)
    picture = strip_picture(xs, ts)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3 and picture.shape[1] > 4 * 96
    with pytest.raises(ValueError, match="t must be"):
        strip(s, digit, [0, 200], seed=5)


# ----------------------------------------------------------------------------------------------------------------
# Closed form vs chain


@pytest.mark.parametrize(("schedule", "t"), [(SCHEDULES[0], 0), (SCHEDULES[0], 1), (SCHEDULES[0], 120),
                                             (SCHEDULES[0], 999), (SCHEDULES[1], 60)])  # fmt: skip
def test_chain_and_closed_form_agree_with_the_theory(schedule, t, digit):
    """Per-pixel means over n draws miss √ᾱ_t x_0 by σ/√n (σ = √(1 − ᾱ_t)) in RMS over the 64 pixels, which
    itself varies by about 1/√(2·64) ≈ 9%; the pooled std over 64 × 400 values is within about 0.5% of σ."""
    c = chain_vs_closed(schedule, digit, t, seed=0, draws=400)
    sigma = math.sqrt(1 - schedule.alpha_bars[t].item())
    assert c.expected_std == pytest.approx(sigma) and c.expected_mean_error == pytest.approx(sigma / 20)
    for m in (c.chain, c.closed):
        assert m.mean_error == pytest.approx(sigma / 20, rel=0.35)
        assert m.std == pytest.approx(sigma, rel=0.03)
    assert c.shape == (1, 8, 8) and not c.downscaled and c.x_chain.shape == c.x_closed.shape == (1, 8, 8)


def test_the_chain_runs_on_a_small_copy_of_a_big_photo():
    photo = torch.rand(3, 256, 256) * 2 - 1
    c = chain_vs_closed(SCHEDULES[2], photo, 30, seed=1)
    assert c.downscaled and c.shape[0] == 3 and c.shape[1] == c.shape[2]
    assert c.draws * math.prod(c.shape) <= CHAIN_ELEMENTS
    assert c.chain.std == pytest.approx(c.expected_std, rel=0.05)
    small = work_copy(photo, 300)
    assert small.shape == (3, 10, 10) and small.abs().max() <= 1  # 3·10² ≤ 300 < 3·11²; antialiasing averages
    assert work_copy(photo[:, :4, :4], 300).shape == (3, 4, 4)
    long = make_schedule("linear", MAX_CHAIN_STEPS + 1)
    c = chain_vs_closed(long, photo, MAX_CHAIN_STEPS - 1, seed=0)  # a long chain works on a smaller copy still
    assert c.draws * math.prod(c.shape) * MAX_CHAIN_STEPS <= CHAIN_WORK
    with pytest.raises(ValueError, match="steps; at most"):
        chain_vs_closed(long, photo, MAX_CHAIN_STEPS, seed=0)
    assert work_copy(torch.zeros(1000, 2), 300).shape == (150, 2)


# ----------------------------------------------------------------------------------------------------------------
# Pictures


def test_small_images_are_upscaled_by_nearest_neighbour(digit):
    picture = to_picture(digit)  # 8×8 → 256×256, blocks of 32
    assert picture.shape == (256, 256, 3) and picture.dtype == np.uint8
    blocks = picture.reshape(8, 32, 8, 32, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()
    expected = np.round((digit[0].numpy() + 1) * 127.5).astype(np.uint8)
    assert np.array_equal(blocks[:, 0, :, 0, 0], expected)
    assert to_picture(torch.zeros(3, 300, 300)).shape == (300, 300, 3)
    assert to_picture(make_toy("moons", 100), 200).shape == (200, 200, 3)


def test_a_strip_of_large_images_is_shrunk_to_streamlits_widest_image():
    photo = sample_photo("china", 256)
    ts = strip_timesteps(1000)
    picture = strip_picture(strip(SCHEDULES[0], photo, ts, seed=0), ts)  # 8 × 256 px would be 2084 px
    assert MAX_ROW_WIDTH - 12 <= picture.shape[1] <= MAX_ROW_WIDTH
    small = strip_picture(strip(SCHEDULES[0], photo[:, :32, :32], ts, seed=0), ts)
    assert small.shape[1] == 8 * 96 + 9 * 4  # small images keep their (upscaled) size


def test_shown_frame_is_forward_frame_and_its_picture_as_png(digit):
    png, f = shown_frame(SCHEDULES[0], digit, 500, seed=3)
    assert torch.equal(f.x_t, forward_frame(SCHEDULES[0], digit, 500, seed=3).x_t)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), to_picture(f.x_t, 256))


def test_labelled_row_and_png_bytes():
    a, b = np.zeros((20, 30, 3), np.uint8), np.full((20, 10, 3), 200, np.uint8)
    row = labelled_row([a, b], ["t = 0", "t = 9"], gap=4)
    assert row.shape == (20 + 16 + 4, 30 + 10 + 3 * 4, 3)
    assert (row[4:24, 4:34] == 0).all() and (row[4:24, 38:48] == 200).all()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(row)))), row)


# ----------------------------------------------------------------------------------------------------------------
# Uploads: every file either decodes to (C, size, size) in [-1, 1] or raises ImageError saying why


def _png(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, colour_type: int = 2) -> bytes:
    """A valid PNG header for width × height 8-bit RGB (colour type 2; 0 gray, 6 RGBA), followed by a few bytes of
    image data: a few hundred bytes that would decode to width·height·4 bytes. Nothing of that size is allocated."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + _chunk(b"IEND", b"")
    )


def _noise_png() -> bytes:
    return _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))


def _sixteen_bit() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (16, 1))  # columns 0 … 65535
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    return _png(img)


def _palette() -> bytes:
    img = Image.new("P", (8, 8))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0] * 32 + [1] * 32)  # top half colour 0 (red), bottom half colour 1 (blue)
    return _png(img)


def _alpha() -> bytes:
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[:, 4:] = (255, 0, 0, 255)  # right half opaque red; left half fully transparent (black underneath)
    return _png(Image.fromarray(pixels, "RGBA"))


def _exif_rotated_jpeg() -> bytes:
    """Stored 40 wide × 20 high, left half black, right half white, tagged "rotate 90° clockwise to display"
    (orientation 6): shown, it is 20 wide × 40 high, black on top and white below."""
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def _check_sixteen_bit(x):
    assert x[0, :, 0].max() == -1 and x[0, :, -1].min() == 1  # 0 ↦ -1 and 65535 ↦ 1: rescaled, not clipped
    assert (x[0].diff(dim=1) >= 0).all() and x[0].std(0).max() == 0  # still a ramp from left to right


def _check_palette(x):
    assert torch.allclose(x[:, 1, 4], torch.tensor([1.0, -1, -1]))  # red above
    assert torch.allclose(x[:, 6, 4], torch.tensor([-1.0, -1, 1]))  # blue below


def _check_alpha(x):
    assert torch.allclose(x[:, 4, 1], torch.ones(3))  # transparent → white, not the black under it
    assert torch.allclose(x[:, 4, 6], torch.tensor([1.0, -1, -1]))


def _check_rotated(x):
    top, bottom = x[0, :12].mean(), x[0, -12:].mean()
    assert top < -0.9 and bottom > 0.9  # rotated: dark above, light below (unrotated, it would be left/right)
    assert x[0, :12].std() < 0.1


DECODE_CASES = {  # name: (bytes, size, channels, check of the tensor — or the ImageError message it must raise)
    "not an image": (lambda: b"just some text, not pixels", 32, 3, "not a PNG or JPEG"),
    "empty file": (lambda: b"", 32, 3, "empty"),
    "a GIF": (_gif, 32, 3, "not a PNG or JPEG"),
    "truncated PNG": (lambda: _noise_png()[:6000], 32, 3, "truncated or corrupt"),
    "too many bytes": (lambda: b"\x89PNG" + bytes(MAX_UPLOAD_BYTES), 32, 3, "limit is 10 MB"),
    "bomb, 64 megapixels": (lambda: _png_claiming(8000, 8000), 32, 3, "64 megapixels; the limit is 40"),
    "bomb, 10 gigapixels": (lambda: _png_claiming(100_000, 100_000), 32, 3, "far too large"),
    "bomb, 144 MB RGBA": (lambda: _png_claiming(6000, 6000, colour_type=6), 32, 3, "144 MB once decoded"),
    "16-bit gray": (_sixteen_bit, 16, 1, _check_sixteen_bit),
    "palette": (_palette, 8, 3, _check_palette),
    "alpha": (_alpha, 8, 3, _check_alpha),
    "1×1": (lambda: _png(Image.new("RGB", (1, 1), (255, 0, 0))), 32, 3,
            lambda x: torch.allclose(x, torch.tensor([1.0, -1, -1]).view(3, 1, 1).expand(3, 32, 32))),
    "EXIF-rotated JPEG": (_exif_rotated_jpeg, 32, 1, _check_rotated),
    "RGB to gray": (lambda: _png(Image.new("RGB", (4, 4), (255, 0, 0))), 4, 1,
                    lambda x: torch.allclose(x, torch.full((1, 4, 4), 76 / 127.5 - 1))),  # luma of red: 76
}  # fmt: skip


@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_decode_image(case):
    make, size, channels, expect = DECODE_CASES[case]
    data = make()
    if isinstance(expect, str):
        with pytest.raises(ImageError, match=expect):
            decode_image(data, size, channels)
        return
    x = decode_image(data, size, channels)
    assert x.shape == (channels, size, size) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert expect(x) is not False


def test_the_bomb_limit_is_checked_on_the_header():
    """A header just under the limit passes the size check and then fails on its missing pixel data; one just over
    is refused for its size: the check reads the header, not the pixels."""
    side = math.isqrt(MAX_PIXELS)  # gray: 1 byte a pixel, so the pixel limit comes before the decoded-bytes one
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(_png_claiming(side, side, colour_type=0), 32)
    with pytest.raises(ImageError, match="megapixels"):
        decode_image(_png_claiming(side + 1, side + 1, colour_type=0), 32)
    side = math.isqrt(MAX_DECODED_BYTES // 4)  # RGBA: 4 bytes a pixel
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(_png_claiming(side, side, colour_type=6), 32)
    with pytest.raises(ImageError, match="MB once decoded"):
        decode_image(_png_claiming(side + 1, side + 1, colour_type=6), 32)


def test_bad_arguments_are_refused():
    with pytest.raises(ImageError, match="size must be"):
        decode_image(_alpha(), 0)
    with pytest.raises(ImageError, match="channels must be 1"):
        decode_image(_alpha(), 8, channels=2)


# ----------------------------------------------------------------------------------------------------------------
# Sample photos and data sets on disk


def test_sample_photos_load():
    photos = {name: sample_photo(name, 64) for name in SAMPLE_PHOTOS}
    for x in photos.values():
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        assert x.std() > 0.2  # a photo, not a flat square
    assert (photos["china"] - photos["flower"]).abs().mean() > 0.2
    gray = sample_photo("china", 32, channels=1)
    assert gray.shape == (1, 32, 32)
    luma = (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * sample_photo("china", 32)).sum(0)
    assert (gray[0] - luma).abs().mean() < 0.02
    with pytest.raises(ImageError, match="valid names: china, flower"):
        sample_photo("lena")


def _write_idx(path, array: np.ndarray) -> None:
    """torchvision's idx format: big-endian uint32 magic 0x0800 + d, the d sizes, then the uint8 data."""
    path.write_bytes(struct.pack(f">{1 + array.ndim}I", 0x0800 + array.ndim, *array.shape) + array.tobytes())


def test_datasets_on_disk_finds_mnist_and_explains_the_others(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    found = {d.name: d for d in datasets_on_disk(tmp_path)}
    assert list(found) == ["mnist", "fashion_mnist", "cifar10"]
    assert found["mnist"].present and found["mnist"].where == raw
    assert load_dataset("mnist", data_root=tmp_path, max_images=3).x.shape == (3, 1, 28, 28)  # what the page loads
    for name in ("fashion_mnist", "cifar10"):
        assert not found[name].present
        advice = found[name].how_to_get()
        assert f"--dataset {name}" in advice and "--download" in advice and str(tmp_path) in advice
    assert "data_batch_1" in found["cifar10"].missing
    (raw / "t10k-labels-idx1-ubyte").unlink()
    assert datasets_on_disk(tmp_path)[0].missing == ("t10k-labels-idx1-ubyte",)
