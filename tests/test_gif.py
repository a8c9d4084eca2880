"""Grids, scatters and trajectory GIFs: read back with Pillow and imageio, and checked pixel by pixel."""

import io

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from ddpm_core.gif import GAP, MARGIN, MAX_GIF_WIDTH, TEXT_COLOR, trajectory_gif
from ddpm_core.pictures import AXIS_COLOR, PAD_GRAY, POINT_COLOR, POINT_PRED_COLOR, image_grid, points_frame, save_png
from ddpm_core.sample import StepRecord

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def read_gif(data: bytes) -> tuple[list[np.ndarray], list[int], dict]:
    """Every frame as (H, W, 3) uint8, each frame's duration in ms, and the first frame's info."""
    im = Image.open(io.BytesIO(data))
    assert im.format == "GIF"
    frames, durations = [], []
    for frame in ImageSequence.Iterator(im):
        frames.append(np.asarray(frame.convert("RGB")))
        durations.append(frame.info["duration"])
    im.seek(0)
    return frames, durations, dict(im.info, n_frames=im.n_frames, is_animated=im.is_animated)


def count(frame: np.ndarray, color) -> int:
    return int((frame == np.array(color, dtype=np.uint8)).all(-1).sum())


def noise_trajectory(steps=6, shape=(9, 1, 8, 8), seed=0) -> list[StepRecord]:
    gen = torch.Generator().manual_seed(seed)
    return [
        StepRecord(t - 1, torch.randn(shape, generator=gen), torch.rand(shape, generator=gen) * 2 - 1)
        for t in range(steps - 1, -1, -1)
    ]


# ---------------------------------------------------------------------------------------------------------------
# trajectory_gif


def test_one_frame_per_record_looping_with_the_last_frame_held():
    records = noise_trajectory(steps=7)
    frames, durations, info = read_gif(trajectory_gif(records, fps=10, hold_last=2.0))
    assert len(frames) == info["n_frames"] == 7 and info["is_animated"]
    assert info["loop"] == 0  # NETSCAPE extension: loop forever
    assert durations == [100] * 6 + [2000]
    # imageio reads the same number of frames, of the same size
    assert iio.imread(trajectory_gif(records, fps=10), index=None, extension=".gif").shape[:3] == (
        7,
        *frames[0].shape[:2],
    )


def test_durations_follow_fps_and_a_short_hold_is_still_one_frame():
    records = noise_trajectory(steps=4)
    _, durations, _ = read_gif(trajectory_gif(records, fps=12, hold_last=0.0))
    assert durations == [80] * 4  # 1000/12 ms rounds to 83, which GIF's 10 ms units store as 80
    _, durations, _ = read_gif(trajectory_gif(records, fps=25, hold_last=1.0))
    assert durations == [40, 40, 40, 1000]


def halves(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = frame.shape[1]
    return frame[:, : w // 2], frame[:, w // 2 :]


def test_the_panels_show_x_t_left_and_x0_pred_right():
    shape = (4, 1, 8, 8)
    ones = torch.ones(shape)
    records = [StepRecord(0, ones, -ones), StepRecord(-1, -3 * ones, 3 * ones)]  # ±3: clipped to ±1
    (first, second), _, _ = read_gif(trajectory_gif(records))
    left, right = halves(first)
    cell_area = 4 * 32 * 32  # 8×8 images upscaled to 32×32 cells
    assert count(left, WHITE) == cell_area and count(right, WHITE) == 0
    assert count(right, BLACK) == cell_area and count(left, BLACK) == 0
    left, right = halves(second)
    assert count(left, BLACK) == cell_area and count(right, WHITE) == cell_area
    assert count(first, (PAD_GRAY,) * 3) > 0


def test_rgb_images_keep_their_colours():
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(4, 3, 16, 16)
    blue = torch.tensor([-1.0, -1.0, 1.0])[None, :, None, None].expand(4, 3, 16, 16)
    (frame,), _, _ = read_gif(trajectory_gif([StepRecord(-1, red, blue)]))
    left, right = halves(frame)
    assert count(left, (255, 0, 0)) == 4 * 32 * 32 and count(right, (255, 0, 0)) == 0
    assert count(right, (0, 0, 255)) == 4 * 32 * 32


def test_the_label_names_the_step_and_can_be_turned_off():
    x = torch.zeros(4, 1, 8, 8)
    (a, b), _, _ = read_gif(trajectory_gif([StepRecord(6, x, x), StepRecord(2, x, x)]))
    assert count(a, TEXT_COLOR) > 0
    differs = np.nonzero((a != b).any(axis=(1, 2)))[0]
    assert differs.min() > a.shape[0] - 20  # only the bottom "t = …" row differs between the two frames
    (c,), _, _ = read_gif(trajectory_gif([StepRecord(6, x, x)], label=False))
    assert count(c, TEXT_COLOR) == 0 and c.shape[0] < a.shape[0]


def test_a_big_rgb_batch_fits_the_streamlit_width():
    records = noise_trajectory(steps=2, shape=(64, 3, 64, 64))
    frames, _, _ = read_gif(trajectory_gif(records))
    assert frames[0].shape[1] <= MAX_GIF_WIDTH == 1460


def test_the_cell_scale_shrinks_until_the_frame_fits():
    # 400 MNIST-sized images: 20 per row at the default scale 2 make a frame of ≈ 2300 px, at scale 1 it fits
    x = torch.rand(400, 1, 28, 28) * 2 - 1
    (frame,), _, _ = read_gif(trajectory_gif([StepRecord(-1, x, x)], label=False))
    assert image_grid(x).shape[1] * 2 > MAX_GIF_WIDTH
    assert frame.shape[1] == 2 * MARGIN + GAP + 2 * image_grid(x, scale=1).shape[1] <= MAX_GIF_WIDTH


def test_a_frame_too_wide_even_at_scale_one_is_downscaled():
    records = noise_trajectory(steps=2, shape=(64, 3, 64, 64))
    frames, _, _ = read_gif(trajectory_gif(records, max_width=300))
    assert all(f.shape[1] == 300 for f in frames)


def test_points_land_at_their_positions_on_fixed_axes():
    # One x_t point at the origin, one x̂₀ point at (1, 1) on the axes [-2, 2]²: centre and upper-right quarter
    records = [StepRecord(4, torch.zeros(1, 2), torch.ones(1, 2)), StepRecord(-1, torch.ones(1, 2), torch.zeros(1, 2))]
    frames, _, info = read_gif(trajectory_gif(records, lim=2.0))
    assert info["n_frames"] == 2
    left, right = halves(frames[0])
    for panel, point, color in ((left, (0, 0), POINT_COLOR), (right, (1, 1), POINT_PRED_COLOR)):
        rows, cols = np.nonzero((panel == np.array(AXIS_COLOR, dtype=np.uint8)).all(-1))
        top, lft, size = rows.min(), cols.min(), rows.max() - rows.min() + 1  # the panel's border
        dot_r, dot_c = np.nonzero((panel == np.array(color, dtype=np.uint8)).all(-1))
        assert len(dot_r) == 9  # one 3×3 dot
        assert dot_c.mean() - lft == pytest.approx((point[0] + 2) / 4 * (size - 1), abs=0.5)
        assert dot_r.mean() - top == pytest.approx((2 - point[1]) / 4 * (size - 1), abs=0.5)
    assert count(frames[1], POINT_COLOR) == 9 and not np.array_equal(frames[0], frames[1])


def test_point_axes_come_from_the_spread_of_x_t():
    # x_t within ±3 → axes ±3.5: a point at x = 3 stays inside; x̂₀ far outside is left out, not squashed in
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 2, generator=gen) * 2 - 1) * 3
    (frame,), _, _ = read_gif(trajectory_gif([StepRecord(-1, x, x * 100)]))
    assert count(halves(frame)[1], POINT_PRED_COLOR) < 9 * 5


def test_bad_trajectories_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        trajectory_gif([])
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        trajectory_gif([StepRecord(0, x, x), StepRecord(-1, x[:2], x[:2])])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        trajectory_gif([StepRecord(-1, torch.zeros(4, 3), torch.zeros(4, 3))])


# ---------------------------------------------------------------------------------------------------------------
# points_frame


def test_points_frame_pixel_positions():
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, -1.0], [0.5, -0.5]])
    img = points_frame(pts, size=101, lim=1.0)
    assert img.shape == (101, 101, 3) and img.dtype == np.uint8
    # (x, y) → (row, col): y up, x right
    for row, col in ((50, 50), (0, 100), (100, 0), (75, 75)):
        assert tuple(img[row, col]) == POINT_COLOR
    assert tuple(img[25, 25]) != POINT_COLOR  # (-0.5, 0.5) has no point


def test_points_outside_the_axes_are_not_drawn():
    img = points_frame(np.array([[2.0, 0.0], [np.nan, 0.0], [0.3, 0.3]]), size=64, lim=1.0)
    assert count(img, POINT_COLOR) == 9  # only (0.3, 0.3), as one 3×3 dot


# ---------------------------------------------------------------------------------------------------------------
# image_grid


def test_image_grid_shape_and_layout():
    x = torch.linspace(-1, 1, 10)[:, None, None, None].expand(10, 1, 8, 8)  # image i is one flat value
    grid = image_grid(x, scale=1, pad=1)
    assert grid.shape == (3 * 8 + 4, 4 * 8 + 5, 3) and grid.dtype == np.uint8  # 10 → 4 columns, 3 rows
    expected = np.round((x[:, 0, 0, 0].numpy() + 1) * 127.5)
    for i in range(10):
        r, c = divmod(i, 4)
        cell = grid[1 + r * 9 : 9 + r * 9, 1 + c * 9 : 9 + c * 9]
        assert (cell == expected[i]).all()
    assert (grid[0] == PAD_GRAY).all() and (grid[:, 9] == PAD_GRAY).all()  # border and separators
    assert (grid[19:, 19:] == PAD_GRAY).all()  # the last row's two empty cells
    assert image_grid(x, scale=1, pad=0).shape == (24, 32, 3)
    assert image_grid(x, nrow=5, scale=2, pad=3).shape == (2 * 16 + 9, 5 * 16 + 18, 3)


def test_image_grid_default_scale_makes_big_enough_cells_within_the_width():
    assert image_grid(np.zeros((16, 1, 8, 8))).shape == (4 * 32 + 5, 4 * 32 + 5, 3)  # scale 4: 32 px cells
    assert image_grid(np.zeros((4, 3, 28, 28))).shape == (2 * 56 + 3, 2 * 56 + 3, 3)  # scale 2
    wide = image_grid(np.zeros((2500, 1, 8, 8)))  # 50 per row: scale 4 would be 1651 px wide
    assert wide.shape[1] <= MAX_GIF_WIDTH and wide.shape[1] == 50 * 24 + 51


def test_image_grid_clips_and_handles_grayscale_and_rgb():
    x = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0, float("nan")])[:, None, None, None].expand(6, 1, 2, 2)
    grid = image_grid(x, nrow=6, scale=1, pad=0)
    assert grid[0, ::2, 0].tolist() == [0, 0, 128, 255, 255, 128]  # NaN: mid-gray
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()
    rgb = torch.stack([torch.full((2, 2), v) for v in (1.0, 0.0, -1.0)])[None]  # (1, 3, 2, 2)
    assert image_grid(rgb, scale=1, pad=0)[0, 0].tolist() == [255, 128, 0]
    grad = torch.zeros(1, 1, 4, 4, requires_grad=True)
    assert image_grid(grad * 2, scale=1).shape == (6, 6, 3)


def test_image_grid_rejects_other_shapes():
    for bad in (np.zeros((4, 8, 8)), np.zeros((4, 2, 8, 8)), np.zeros((0, 1, 8, 8))):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            image_grid(bad)


# ---------------------------------------------------------------------------------------------------------------
# save_png


def test_save_png_round_trips_and_leaves_no_temp_file(tmp_path):
    grid = image_grid(torch.rand(5, 3, 8, 8) * 2 - 1)
    save_png(grid, tmp_path / "grid.png")
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), grid)
    save_png(grid[:10], str(tmp_path / "grid.png"))  # replaces, as str path too
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape[0] == 10


def test_save_png_into_a_missing_folder_raises_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "missing" / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_save_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "x.png"
    save_png(np.full((4, 4, 3), 7, np.uint8), path)
    with pytest.raises((TypeError, ValueError)):
        save_png(np.zeros((4, 4, 7), np.uint8), path)  # 7 channels: Pillow fails after the temp file exists
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    assert (np.asarray(Image.open(path)) == 7).all()
