"""Bad input, in one table: each row is something a user can get wrong, met where the user meets it — a core call
(a ValueError or one of its kinds: CheckpointError, ImageError, DatasetError), a CLI (`error: …` on one line, exit
code 2, no traceback) or a page (st.error, no exception) — and the message that must name the problem. Uploads that
look odd but are fine (16-bit, palette, alpha, 1×1) are accepted and converted; run names that try to leave the runs
folder land inside it. Hypothesis then sweeps the spaces behind the rows: any run name, any schedule numbers, any
upload bytes. Last, the server settings in .streamlit/config.toml.

Several rows are also tested beside their code (tests/test_forward.py's upload table, tests/test_runs.py,
tests/test_config.py, tests/test_cli.py, tests/test_page_*.py); this table reuses their input builders, so the two
cannot drift apart.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import safe_open, save_file

from ddpm_core import runs
from ddpm_core.config import TrainConfig
from ddpm_core.data import DatasetError, load_dataset
from ddpm_core.images import MAX_UPLOAD_BYTES, ImageError, decode_image
from ddpm_core.schedules import MAX_T, SCHEDULES, make_schedule
from explorer.jobs import run_folder
from tests.apptest_helpers import open_page, rerun
from tests.conftest import ROOT
from tests.runs_helpers import call_cli
from tests.test_forward import DECODE_CASES, _noise_png, _png

BUNDLED = ROOT / "assets" / "checkpoints" / "digits.safetensors"  # a real checkpoint: no training needed here
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Env:
    """What a row may use: a scratch folder holding a runs root, a marker file that only running code creates."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def runs_root(self) -> Path:
        return self.tmp / "runs"

    @property
    def marker(self) -> Path:
        return self.tmp / "pwned"


@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    e = Env(tmp_path, monkeypatch)
    e.runs_root.mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(e.runs_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return e


# ----------------------------------------------------------------------------------------------------------------
# The levels a user meets an input at: each returns what the user is shown, as one string.


def raised(kind: type[Exception], call: Callable[[], object]) -> str:
    with pytest.raises(kind) as failure:
        call()
    return f"{type(failure.value).__name__}: {failure.value}"


def core(kind: type[Exception], call: Callable[[Env], object]) -> Callable[[Env], str]:
    return lambda env: raised(kind, lambda: call(env))


def cli(module: str, *argv) -> Callable[[Env], str]:
    """`python -m ddpm_core.<module> argv…`, in process; `{x}` in argv is env's path x (e.g. {tmp}/evil.pt)."""

    def call(env: Env) -> str:
        args = [str(a).format(tmp=env.tmp, runs=env.runs_root) for a in argv]
        result = call_cli(module, *args)
        rc, out, err = result.returncode, result.stdout, result.stderr
        assert rc == 2, (rc, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in out + err, err
        return err.strip()

    return call


def cli_process(module: str, *argv) -> Callable[[Env], str]:
    """The same as a real process, as a user's terminal runs it."""

    def call(env: Env) -> str:
        args = [str(a).format(tmp=env.tmp, runs=env.runs_root) for a in argv]
        cmd = [sys.executable, "-m", f"ddpm_core.{module}", *args]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
        assert result.stderr.startswith("error: "), result.stderr
        return result.stderr.strip()

    return call


def page(file: str, act: Callable[[object, Env], None]) -> Callable[[Env], str]:
    """Open pages/<file> through AppTest, let act set widgets by key, rerun: no exception, and the st.error shown."""

    def call(env: Env) -> str:
        at = open_page(file)
        act(at, env)
        rerun(at)
        assert not at.exception, [e.value for e in at.exception]
        return "st.error: " + " | ".join(e.value for e in at.error)

    return call


def widget(kind: str, key: str, value) -> Callable[[object, Env], None]:
    def act(at, env: Env) -> None:
        getattr(at, kind)(key=key).set_value(value)

    return act


def upload(name: str, data: Callable[[], bytes]) -> Callable[[object, Env], None]:
    def act(at, env: Env) -> None:
        at.selectbox(key="source").set_value("upload")
        rerun(at).file_uploader(key="upload").upload(name, data(), "image/png")

    return act


def inside(folder: Callable[[Env], Path]) -> Callable[[Env], str]:
    """A run name that maps to a folder: it must be a direct child of the runs root."""

    def call(env: Env) -> str:
        path = folder(env)
        assert path.resolve().parent == env.runs_root.resolve(), path
        return f"inside: {path.name}"

    return call


def decoded(case: str) -> Callable[[Env], str]:
    """An upload from tests/test_forward.py's table that must be accepted and converted as that table checks."""

    def call(env: Env) -> str:
        make, size, channels, check = DECODE_CASES[case]
        x = decode_image(make(), size, channels)
        assert x.shape == (channels, size, size) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
        assert check(x) is not False
        return "accepted"

    return call


def undecoded(case: str) -> Callable[[Env], str]:
    return lambda env: raised(ImageError, lambda: decode_image(DECODE_CASES[case][0](), 32))


# ----------------------------------------------------------------------------------------------------------------
# Bad checkpoints, written into env.tmp (from the bundled digits checkpoint: no training needed)


def _tensors_and_metadata() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(BUNDLED), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (safe_open is not a dict)


def truncated(env: Env) -> Path:
    path = env.tmp / "truncated.safetensors"
    data = BUNDLED.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def with_metadata(env: Env, name: str, change: Callable[[dict], dict | None]) -> Path:
    tensors, meta = _tensors_and_metadata()
    path = env.tmp / name
    save_file(tensors, str(path), metadata=change(dict(meta)))
    return path


def wider(env: Env) -> Path:
    """Weights of the 16-channel tiny UNet, metadata that claims 8 channels."""
    model_config = {**json.loads(_tensors_and_metadata()[1]["model_config"]), "base_channels": 8}
    return with_metadata(env, "wider.safetensors", lambda m: {**m, "model_config": json.dumps(model_config)})


def other_shape(env: Env) -> Path:
    """A model for 1×8×8 digits whose data claims 3×8×8 RGB images: sampling would fail inside the first conv."""
    data = {**json.loads(_tensors_and_metadata()[1]["data"]), "shape": [3, 8, 8]}
    return with_metadata(env, "rgb.safetensors", lambda m: {**m, "data": json.dumps(data)})


def no_config(env: Env) -> Path:
    return with_metadata(env, "no-config.safetensors", lambda m: {k: v for k, v in m.items() if k != "train_config"})


def no_metadata(env: Env) -> Path:
    return with_metadata(env, "foreign.safetensors", lambda m: None)


class Payload:
    """Unpickling this calls pathlib.Path.touch(marker): the marker appears only if someone runs the pickle's code."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def evil_run(env: Env) -> Path:
    """A run folder whose config is fine and whose three checkpoint files are pickles that carry code: the weights
    as a plain pickle, the EMA weights and the training state through torch.save (a zip around the pickle)."""
    run = env.runs_root / "evil"
    run.mkdir(exist_ok=True)
    runs.write_text(run / runs.CONFIG, TrainConfig(T=100, preview_steps=5).to_json())
    (run / runs.MODEL).write_bytes(pickle.dumps({"weights": Payload(env.marker)}))
    torch.save({"weights": Payload(env.marker)}, run / runs.EMA)
    torch.save({"step": 1, "optimizer": Payload(env.marker)}, run / runs.STATE)
    return run


def evil_pt(env: Env) -> Path:
    path = env.tmp / "evil.pt"
    torch.save({"state_dict": Payload(env.marker)}, path)
    return path


def good_weights_evil_state(env: Env) -> Path:
    """A resumable run (the bundled weights, its config) whose training state alone carries code."""
    run = env.runs_root / "resumable"
    run.mkdir()
    for name in (runs.MODEL, runs.EMA):
        shutil.copy(BUNDLED, run / name)
    runs.write_text(run / runs.CONFIG, _tensors_and_metadata()[1]["train_config"])
    torch.save({"step": 4000, "optimizer": Payload(env.marker)}, run / runs.STATE)
    return run


def then(prepare: Callable[[Env], object], call: Callable[[Env], str]) -> Callable[[Env], str]:
    def both(env: Env) -> str:
        prepare(env)
        return call(env)

    return both


def pick_checkpoint(file: Callable[[Env], Path]) -> Callable[[object, Env], None]:
    """The Sample page's checkpoint picker set to a run folder's file, made before the page lists the runs."""

    def act(at, env: Env) -> None:
        path = file(env)
        rerun(at).selectbox(key="checkpoint").set_value(str(path))

    return act


def in_runs(make: Callable[[Env], Path]) -> Callable[[Env], Path]:
    """The checkpoint made by make, as a run folder's ema.safetensors in the runs root."""

    def place(env: Env) -> Path:
        run = env.runs_root / "bad"
        run.mkdir(exist_ok=True)
        return Path(shutil.copy(make(env), run / runs.EMA))

    return place


# ----------------------------------------------------------------------------------------------------------------
# The table: (what the user does, at which level) → a regular expression the message must match


def _t(**kw):
    return lambda env: TrainConfig(**kw)


def _sched(name: str = "linear", T: int = 1000, **params):
    return lambda env: make_schedule(name, T, **params)


BIG = 10**6
ROWS = [
    # -- schedule parameters
    pytest.param(
        core(ValueError, _sched(beta_start=-1e-4)),
        r"beta_start must lie strictly between 0 and 1, got -0.0001",
        id="schedule-negative-beta",
    ),
    pytest.param(
        core(ValueError, _sched(beta_start=0.0)),
        r"beta_start must lie strictly between 0 and 1, got 0.0",
        id="schedule-zero-beta",
    ),
    pytest.param(
        core(ValueError, _sched(T=0)), r"T \(number of timesteps\) must be at least 2, got 0", id="schedule-zero-T"
    ),
    pytest.param(core(ValueError, _sched(T=-5)), r"must be at least 2, got -5", id="schedule-negative-T"),
    pytest.param(
        core(ValueError, _sched(beta_end=math.nan)), r"beta_end must be finite, got nan", id="schedule-nan-beta"
    ),
    pytest.param(
        core(ValueError, _sched("sigmoid", tau=math.inf)), r"tau must be finite, got inf", id="schedule-inf-tau"
    ),
    pytest.param(
        core(ValueError, _sched("cosine", s=-math.inf)), r"s must be finite, got -inf", id="schedule-minus-inf-s"
    ),
    pytest.param(
        core(ValueError, _sched("cosine", s=-0.1)),
        r"s \(the cosine offset\) must be ≥ 0, got -0.1",
        id="schedule-negative-s",
    ),
    pytest.param(
        core(ValueError, _sched("sigmoid", tau=0.0)), r"tau must be positive, got 0.0", id="schedule-zero-tau"
    ),
    pytest.param(
        core(ValueError, _sched(beta_start=0.01, beta_end=0.001)),
        r"beta_end \(0.001\) must not be smaller than beta_start \(0.01\)",
        id="schedule-end-below-start",
    ),
    pytest.param(core(ValueError, _sched(T=1)), r"must be at least 2, got 1", id="schedule-T-1"),
    pytest.param(core(ValueError, _sched(T=BIG)), rf"must be at most {MAX_T}, got {BIG}", id="schedule-T-1e6"),
    pytest.param(core(ValueError, _t(T=BIG)), rf"must be at most {MAX_T}, got {BIG}", id="schedule-T-1e6-config"),
    pytest.param(
        cli("train", "--T", BIG, "--out", "{tmp}/never"),
        rf"^error: .*must be at most {MAX_T}, got {BIG}$",
        id="schedule-T-1e6-cli",
    ),
    pytest.param(
        page("schedules.py", widget("number_input", "s0.linear.beta_end", 1e-5)),
        r"st.error: .*beta_end \(1e-05\) must not be smaller than beta_start \(0.0001\)",
        id="schedule-end-below-start-page",
    ),
    pytest.param(
        page("forward.py", widget("number_input", "T", BIG)),
        rf"st.error: .*must be at most {MAX_T}, got {BIG}",
        id="schedule-T-1e6-page",
    ),
    pytest.param(
        page("forward.py", widget("number_input", "linear.beta_start", 0.0)),
        r"st.error: .*beta_start must lie strictly between 0 and 1, got 0.0",
        id="schedule-zero-beta-page",
    ),
    # -- uploads (the page decodes them with decode_image)
    pytest.param(
        undecoded("not an image"), r"ImageError: this file is not a PNG or JPEG image", id="upload-not-an-image"
    ),
    pytest.param(undecoded("empty file"), r"ImageError: the file is empty", id="upload-empty"),
    pytest.param(
        undecoded("truncated PNG"),
        r"ImageError: the PNG file could not be decoded: it may be truncated or corrupt",
        id="upload-truncated-png",
    ),
    pytest.param(
        undecoded("bomb, 64 megapixels"),
        r"ImageError: the image is 8,000 × 8,000 = 64 megapixels; the limit is 40",
        id="upload-bomb",
    ),
    pytest.param(
        undecoded("bomb, 10 gigapixels"), r"ImageError: the image is far too large", id="upload-bomb-10-gigapixels"
    ),
    pytest.param(
        undecoded("bomb, 144 MB RGBA"),
        r"ImageError: the image is 6,000 × 6,000 RGBA: 144 MB once decoded \(4 bytes a pixel\); the limit is 96 MB",
        id="upload-bomb-decoded-bytes",
    ),
    pytest.param(
        undecoded("too many bytes"), r"ImageError: the file is 10.0 MB; the limit is 10 MB", id="upload-over-the-cap"
    ),
    pytest.param(decoded("16-bit gray"), r"^accepted$", id="upload-16-bit"),
    pytest.param(decoded("palette"), r"^accepted$", id="upload-palette"),
    pytest.param(decoded("alpha"), r"^accepted$", id="upload-alpha"),
    pytest.param(decoded("1×1"), r"^accepted$", id="upload-1x1"),
    pytest.param(
        page("forward.py", upload("notes.png", lambda: b"just text")),
        r"st.error: Cannot use notes.png: this file is not a PNG or JPEG image",
        id="upload-not-an-image-page",
    ),
    pytest.param(
        page("forward.py", upload("cut.png", lambda: _noise_png()[:6000])),
        r"st.error: Cannot use cut.png: .*truncated or corrupt",
        id="upload-truncated-png-page",
    ),
    pytest.param(
        page("forward.py", upload("huge.png", DECODE_CASES["too many bytes"][0])),
        r"st.error: Cannot use huge.png: the file is 10.0 MB; the limit is 10 MB",
        id="upload-over-the-cap-page",
    ),
    # -- checkpoints
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(truncated(env))),
        r"truncated.safetensors is not a readable safetensors checkpoint \(truncated or another format\)",
        id="checkpoint-truncated",
    ),
    pytest.param(
        then(truncated, cli("sample", "--checkpoint", "{tmp}/truncated.safetensors")),
        r"^error: .*truncated.safetensors is not a readable safetensors checkpoint",
        id="checkpoint-truncated-cli",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(wider(env))),
        r"wider.safetensors: the weights do not fit the architecture in its config",
        id="checkpoint-wrong-architecture",
    ),
    pytest.param(
        then(wider, cli("evaluate", "--checkpoint", "{tmp}/wider.safetensors", "--n", 10)),
        r"^error: .*the weights do not fit the architecture",
        id="checkpoint-wrong-architecture-cli",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(other_shape(env))),
        r"rgb.safetensors: its data shape \[3, 8, 8\] does not fit its model, which takes \[1, 8, 8\]",
        id="checkpoint-wrong-data-shape",
    ),
    pytest.param(
        then(other_shape, cli("sample", "--checkpoint", "{tmp}/rgb.safetensors", "--n", 2)),
        r"^error: .*its data shape \[3, 8, 8\] does not fit its model",
        id="checkpoint-wrong-data-shape-cli",
    ),
    pytest.param(
        page("sample.py", pick_checkpoint(in_runs(other_shape))),
        r"st.error: Cannot use this checkpoint: .*its data shape \[3, 8, 8\] does not fit its model",
        id="checkpoint-wrong-data-shape-page",
    ),
    pytest.param(
        then(good_weights_evil_state, cli("train", "--out", "{runs}/resumable", "--resume", "--channels", 3)),
        r"^error: .*was trained with another model .*resume it with the same model and data settings",
        id="checkpoint-resume-with-other-data-cli",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(no_config(env))),
        r"no-config.safetensors has a missing or invalid config in its metadata: 'train_config'",
        id="checkpoint-missing-config",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(no_metadata(env))),
        r"foreign.safetensors has no DDPM Explorer metadata .*lacks the config needed to rebuild the model",
        id="checkpoint-no-metadata",
    ),
    pytest.param(
        cli("train", "--resume", "--out", "{runs}/nothing"),
        r"^error: nothing to resume: .*nothing/config.json is missing$",
        id="checkpoint-missing-config-json-cli",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(evil_run(env) / runs.MODEL)),
        r"model.safetensors is not a readable safetensors checkpoint",
        id="pickle-as-model.safetensors",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(evil_run(env))),
        r"ema.safetensors is not a readable safetensors checkpoint",
        id="pickle-in-a-run-folder",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(evil_pt(env))),
        r"evil.pt is not a readable safetensors checkpoint",
        id="pickle-as-.pt",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_training_state(evil_run(env) / runs.STATE)),
        r"training_state.pt is not a training state this tool wrote \(UnpicklingError",
        id="pickle-as-training_state",
    ),
    pytest.param(
        then(evil_run, cli("sample", "--checkpoint", "{runs}/evil")),
        r"^error: .*evil/ema.safetensors is not a readable safetensors checkpoint",
        id="pickle-sample-cli",
    ),
    pytest.param(
        then(evil_run, cli("sample", "--checkpoint", "{runs}/evil", "--raw")),
        r"^error: .*evil/model.safetensors is not a readable safetensors checkpoint",
        id="pickle-sample-cli-raw",
    ),
    pytest.param(
        then(evil_pt, cli_process("sample", "--checkpoint", "{tmp}/evil.pt")),
        r"^error: .*evil.pt is not a readable safetensors checkpoint",
        id="pickle-sample-cli-process",
    ),
    pytest.param(
        then(evil_run, cli("evaluate", "--checkpoint", "{runs}/evil")),
        r"^error: .*is not a readable safetensors checkpoint",
        id="pickle-evaluate-cli",
    ),
    pytest.param(
        then(evil_run, cli("train", "--out", "{runs}/evil", "--resume", "--steps", 10)),
        r"^error: .*evil/model.safetensors is not a readable safetensors checkpoint",
        id="pickle-resume-cli",
    ),
    pytest.param(
        then(good_weights_evil_state, cli("train", "--out", "{runs}/resumable", "--resume", "--steps", 4010)),
        r"^error: .*training_state.pt is not a training state this tool wrote",
        id="pickle-training-state-resume-cli",
    ),
    pytest.param(
        page("sample.py", pick_checkpoint(lambda env: evil_run(env) / runs.EMA)),
        r"st.error: Cannot use this checkpoint: .*evil/ema.safetensors is not a readable safetensors checkpoint",
        id="pickle-sample-page",
    ),
    # -- run names
    pytest.param(inside(lambda env: run_folder("../x", "digits", env.runs_root)), r"^inside: x$", id="name-dot-dot"),
    pytest.param(
        inside(lambda env: run_folder("/etc/passwd", "digits", env.runs_root)),
        r"^inside: etc-passwd$",
        id="name-absolute",
    ),
    pytest.param(
        inside(lambda env: run_folder(str(env.tmp / "elsewhere"), "digits", env.runs_root)),
        r"^inside: tmp-",
        id="name-absolute-tmp",
    ),
    pytest.param(
        inside(lambda env: run_folder("", "digits", env.runs_root)),
        r"^inside: digits-\d{8}-\d{6}$",
        id="name-empty-means-dataset-time",
    ),
    pytest.param(
        inside(lambda env: run_folder("a" * 5000, "digits", env.runs_root)),
        rf"^inside: a{{{runs.MAX_NAME}}}$",
        id="name-very-long",
    ),
    pytest.param(
        inside(lambda env: run_folder("Ωmega run ünïcode", "digits", env.runs_root)),
        r"^inside: mega-run-n-code$",
        id="name-unicode",
    ),
    pytest.param(
        inside(lambda env: runs.run_dir_for(TrainConfig(name="../../x"), env.runs_root)),
        r"^inside: x$",
        id="name-dot-dot-config",
    ),
    pytest.param(
        inside(lambda env: runs.run_dir_for(TrainConfig(name="../../x"))), r"^inside: x$", id="name-dot-dot-env-root"
    ),
    pytest.param(
        core(ValueError, lambda env: runs.sanitize_run_name("数字")),
        r"run name '数字' has no letters or digits",
        id="name-unicode-only",
    ),
    pytest.param(
        core(ValueError, lambda env: run_folder("///", "digits", env.runs_root)),
        r"run name '///' has no letters or digits",
        id="name-slashes-only",
    ),
    pytest.param(
        core(ValueError, lambda env: runs.sanitize_run_name("")),
        r"run name '' has no letters or digits",
        id="name-empty-sanitized",
    ),
    pytest.param(
        page("train.py", widget("text_input", "name", "数字")),
        r"st.error: run name '数字' has no letters or digits",
        id="name-unicode-only-page",
    ),
    # -- training settings
    pytest.param(core(ValueError, _t(batch_size=0)), r"batch_size must be positive, got 0", id="train-batch-0"),
    pytest.param(core(ValueError, _t(lr=0.0)), r"lr must be positive, got 0.0", id="train-lr-0"),
    pytest.param(core(ValueError, _t(lr=-1e-3)), r"lr must be positive, got -0.001", id="train-lr-negative"),
    pytest.param(
        core(ValueError, _t(steps=0)), r"steps must be positive \(or epochs > 0\), got steps=0", id="train-steps-0"
    ),
    pytest.param(
        core(DatasetError, lambda env: load_dataset("digits", classes=[])),
        r"classes is empty, which would keep nothing of digits",
        id="train-classes-empty",
    ),
    pytest.param(
        core(DatasetError, lambda env: load_dataset("digits", classes=["eleven"])),
        r"unknown class 'eleven' for digits",
        id="train-classes-no-class",
    ),
    pytest.param(
        cli("train", "--batch-size", 0, "--out", "{tmp}/never"),
        r"^error: batch_size must be positive, got 0$",
        id="train-batch-0-cli",
    ),
    pytest.param(
        cli("train", "--lr", 0, "--out", "{tmp}/never"), r"^error: lr must be positive, got 0.0$", id="train-lr-0-cli"
    ),
    pytest.param(
        cli("train", "--steps", 0, "--out", "{tmp}/never"), r"^error: steps must be positive", id="train-steps-0-cli"
    ),
    pytest.param(
        cli("train", "--classes", 11, "--steps", 5, "--out", "{tmp}/never"),
        r"^error: class 11 is not one of digits's classes",
        id="train-classes-no-class-cli",
    ),
    pytest.param(
        page("train.py", widget("number_input", "lr", 0.0)),
        r"st.error: These settings cannot train: lr must be positive, got 0.0",
        id="train-lr-0-page",
    ),
]


@pytest.mark.parametrize(("call", "message"), ROWS)
def test_bad_input_gets_a_clear_message(env, call, message):
    shown = call(env)
    assert re.search(message, shown), shown
    assert not env.marker.exists()  # no row ran a pickle's code
    assert not (env.tmp / "never").exists()  # a run that cannot start leaves no folder behind


def test_the_payload_is_live(tmp_path):
    """The control for the pickle rows: an unsafe load does run the payload (so its absence above means something)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    buffer = io.BytesIO()
    torch.save({"x": Payload(marker)}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# The spaces behind the rows


@HYPOTHESIS
@given(name=st.text(max_size=300))
def test_any_run_name_maps_inside_the_runs_root_or_is_refused(tmp_path, name):
    root = (tmp_path / "runs").resolve()
    try:
        folder = run_folder(name, "digits", root)
    except ValueError as e:
        assert "has no letters or digits" in str(e)
        return
    assert folder.parent == root and folder.resolve().parent == root  # no "..", no symlink games, no absolute path
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", folder.name)
    assert not name.strip() or runs.run_dir_for(TrainConfig(name=name), root) == folder  # blank: app default


FAMILIES = [n for n in SCHEDULES if "beta_start" in SCHEDULES[n].defaults]
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1) | st.sampled_from([0.0, 1.0, 1e-13])


@HYPOTHESIS
@given(
    name=st.sampled_from(FAMILIES),
    T=st.integers(-3, 2000) | st.sampled_from([MAX_T + 1, BIG]),
    beta_start=ANY_FLOAT,
    beta_end=ANY_FLOAT,
)
def test_any_schedule_numbers_build_a_valid_schedule_or_raise_value_error(name, T, beta_start, beta_end):
    try:
        s = make_schedule(name, T, beta_start=beta_start, beta_end=beta_end)
    except ValueError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert s.betas.dtype == s.alpha_bars.dtype == torch.float64 and s.betas.shape == (T,)
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert (s.alpha_bars.diff() <= 0).all() and s.alpha_bars[0] < 1
    assert torch.isfinite(s.log_alpha_bars).all() and (s.posterior_variance >= 0).all()


def _small_png() -> bytes:
    return _png(Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 10, 4), dtype=np.uint8), "RGBA"))


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@st.composite
def damaged_images(draw) -> bytes:
    """A small real PNG or JPEG, cut short and with a few bytes changed: close enough to parse, then fail."""
    data = bytearray(draw(st.sampled_from([_small_png(), _small_jpeg()])))
    data = data[: draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@HYPOTHESIS
@given(data=st.binary(max_size=2000) | damaged_images(), size=st.sampled_from([1, 8, 32]))
def test_any_upload_bytes_decode_or_raise_image_error(data, size):
    try:
        x = decode_image(data, size, channels=3)
    except ImageError as e:
        assert str(e)
        return
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


# ----------------------------------------------------------------------------------------------------------------
# The server's settings


def test_streamlit_config_sets_the_security_and_ci_settings():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["headless"] is True  # CI and servers: never try to open a browser
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    cap_mb = config["server"]["maxUploadSize"]
    # Streamlit enforces the cap in the browser; decode_image refuses the same size for any other caller, and the
    # uploader's label says it
    assert cap_mb * 2**20 == MAX_UPLOAD_BYTES
    assert f"up to {cap_mb} MB" in (ROOT / "explorer" / "forward_widgets.py").read_text()
    from streamlit import config as streamlit_config

    known = streamlit_config._config_options_template  # a misspelt key would be ignored without a word
    for section, values in config.items():
        for key in values:
            assert f"{section}.{key}" in known, f"{section}.{key} is not a Streamlit option"


# ----------------------------------------------------------------------------------------------------------------
# Paths the UI builds from what a user picks


def test_the_sample_pages_checkpoints_are_bundled_or_in_the_runs_root(env):
    """The Sample page offers only these paths (and drops a picked one that is no longer among them): a user picks
    a checkpoint, never types a path."""
    from explorer.checkpoints import BUNDLED as bundled_folder
    from explorer.checkpoints import checkpoint_files

    for name in ("ok", "..hidden", "-dash", "a b"):
        (env.runs_root / name).mkdir()
        shutil.copy(BUNDLED, env.runs_root / name / runs.EMA)
    (env.runs_root / "stray.safetensors").write_bytes(b"not in a run folder")
    offered = [Path(p).resolve() for p in checkpoint_files(env.runs_root)]
    assert len(offered) == len(list(bundled_folder.glob("*.safetensors"))) + 4
    for path in offered:
        assert path.parent == bundled_folder.resolve() or path.parent.parent == env.runs_root.resolve(), path
