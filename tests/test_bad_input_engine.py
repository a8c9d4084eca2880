"""The bad-input table, continued for the engine's limits (issue 15 §2 and §5): checkpoints and settings that ask for
a network, a run or a data set too large to build, and a run folder that another trainer holds or that is not this
run. Same row style and helpers as tests/test_bad_input.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ddpm_core import runs
from ddpm_core.model_limits import MAX_PARAMETERS
from ddpm_core.models import ModelConfig
from ddpm_core.run_lock import LOCK
from tests.test_bad_input import (
    BUNDLED,
    Env,
    _t,
    _tensors_and_metadata,
    cli,
    core,
    in_runs,
    page,
    pick_checkpoint,
    then,
    with_metadata,
)
from tests.test_bad_input import env as bad_input_env  # noqa: F401 (the fixture, named apart from the rows' env)


def huge(**change) -> Callable[[Env], Path]:
    """The bundled checkpoint with its model config changed (no weights to match: the check must fire first)."""

    def make(env: Env) -> Path:
        model_config = {**json.loads(_tensors_and_metadata()[1]["model_config"]), **change}
        return with_metadata(env, "huge.safetensors", lambda m: {**m, "model_config": json.dumps(model_config)})

    return make


def resumable_huge(env: Env) -> Path:
    """A run folder with the bundled config whose weights file claims a million residual blocks per level."""
    run = env.runs_root / "resumable"
    run.mkdir()
    for name in (runs.MODEL, runs.EMA):
        shutil.copy(huge(num_res_blocks=10**6)(env), run / name)
    runs.write_text(run / runs.CONFIG, _tensors_and_metadata()[1]["train_config"])
    return run


def folder_of_another_run(env: Env) -> Path:
    run = env.runs_root / "other"
    run.mkdir()
    runs.write_text(run / runs.CONFIG, json.dumps({"dataset": "moons", "steps": 5}))
    runs.write_status(run, "done", step=5)
    return run


def locked_by_parent(env: Env) -> Path:
    """A resumable run whose lock names a live process (ours' parent) on this host."""
    run = resumable_ok(env)
    (run / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    return run


def resumable_ok(env: Env) -> Path:
    run = env.runs_root / "resumable"
    run.mkdir(exist_ok=True)
    for name in (runs.MODEL, runs.EMA):
        shutil.copy(BUNDLED, run / name)
    runs.write_text(run / runs.CONFIG, _tensors_and_metadata()[1]["train_config"])
    return run


BLOCKS = r"num_res_blocks must lie in \[1, 8\], got 1000000"

ROWS = [
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(huge(num_res_blocks=10**6)(env))),
        rf"huge.safetensors has a missing or invalid config in its metadata: {BLOCKS}",
        id="checkpoint-million-blocks",
    ),
    pytest.param(
        then(huge(num_res_blocks=10**6), cli("sample", "--checkpoint", "{tmp}/huge.safetensors", "--n", 2)),
        rf"^error: .*{BLOCKS}",
        id="checkpoint-million-blocks-sample-cli",
    ),
    pytest.param(
        then(huge(num_res_blocks=10**6), cli("evaluate", "--checkpoint", "{tmp}/huge.safetensors", "--n", 10)),
        rf"^error: .*{BLOCKS}",
        id="checkpoint-million-blocks-evaluate-cli",
    ),
    pytest.param(
        then(huge(num_res_blocks=10**6), cli("train", "--init-from", "{tmp}/huge.safetensors", "--out", "{tmp}/never")),
        rf"^error: .*{BLOCKS}",
        id="checkpoint-million-blocks-init-from-cli",
    ),
    pytest.param(
        then(resumable_huge, cli("train", "--out", "{runs}/resumable", "--resume", "--steps", 4010)),
        rf"^error: .*{BLOCKS}",
        id="checkpoint-million-blocks-resume-cli",
    ),
    pytest.param(
        page("sample.py", pick_checkpoint(in_runs(huge(num_res_blocks=10**6)))),
        rf"st.error: Cannot use this checkpoint: .*{BLOCKS}",
        id="checkpoint-million-blocks-page",
    ),
    pytest.param(
        core(runs.CheckpointError, lambda env: runs.load_checkpoint(huge(base_channels=1024, channel_mults=[8])(env))),
        r"huge.safetensors has a missing or invalid config .*would have [\d,]+ parameters; at most "
        + f"{MAX_PARAMETERS:,}",
        id="checkpoint-too-many-parameters",
    ),
    pytest.param(
        core(
            ValueError,
            lambda env: ModelConfig(image_size=64, channel_mults=(1,), attention_resolutions=(64,), base_channels=1024),
        ),
        r"one forward pass of this model would hold [\d,]+ values per sample; at most [\d,]+ are allowed",
        id="model-attention-at-64px-too-large",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(channel_mults=(1,) * 7)),
        r"channel_mults must have 1 to 6 levels, got 7",
        id="model-seven-levels",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(channel_mults=(1, 100))),
        r"each of channel_mults must lie in \[1, 8\], got 100",
        id="model-mult-100",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(num_res_blocks=2.5)),
        r"num_res_blocks must be a whole number in \[1, 8\], got 2.5",
        id="model-fractional-blocks",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(kind="mlp", num_layers=10**6)),
        r"num_layers must lie in \[1, 64\], got 1000000",
        id="model-million-layers",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(kind="mlp", in_channels=10**6)),
        r"in_channels must lie in \[1, 64\], got 1000000",
        id="model-million-point-dims",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(num_classes=10**7)),
        r"num_classes must lie in \[0, 1000\], got 10000000",
        id="model-ten-million-classes",
    ),
    pytest.param(
        core(ValueError, lambda env: ModelConfig(attention_resolutions=(4, 10**9))),
        r"each of attention_resolutions must lie in \[1, 64\], got 1000000000",
        id="model-attention-resolution-huge",
    ),
    pytest.param(
        core(ValueError, _t(model="small", base_channels=1024)),
        r"would have [\d,]+ parameters; at most",
        id="train-config-too-wide",
    ),
    pytest.param(core(ValueError, _t(steps=10**9)), r"steps must be at most 1000000, got 1000000000", id="steps-1e9"),
    pytest.param(core(ValueError, _t(epochs=10**6)), r"epochs must be at most 10000", id="epochs-1e6"),
    pytest.param(core(ValueError, _t(preview_n=10**6)), r"preview_n must be at most 4096", id="preview-n-1e6"),
    pytest.param(
        core(ValueError, _t(dataset="moons", n_points=10**9)), r"n_points must be at most 1000000", id="n-points-1e9"
    ),
    pytest.param(core(ValueError, _t(image_size=10_000)), r"image_size must be at most 64, got 10000", id="image-1e4"),
    pytest.param(
        core(ValueError, _t(base_channels=10**6)),
        r"base_channels must be 0 \(the preset's\) or lie in \[8, 1024\], got 1000000",
        id="base-channels-1e6",
    ),
    pytest.param(
        then(locked_by_parent, cli("train", "--out", "{runs}/resumable", "--resume", "--steps", 4010)),
        rf"^error: .*resumable is being trained by process {os.getppid()}; wait for it to end or stop it first$",
        id="resume-while-another-trainer-runs-cli",
    ),
    pytest.param(
        then(folder_of_another_run, cli("train", "--dataset", "moons", "--steps", 5, "--out", "{runs}/other")),
        r"^error: .*other already holds another run's config.json, which this run would overwrite; .*--overwrite",
        id="out-into-another-run-cli",
    ),
    pytest.param(
        cli("train", "--steps", 10**7, "--out", "{tmp}/never"),
        r"^error: steps must be at most 1000000, got 10000000$",
        id="steps-1e7-cli",
    ),
]


@pytest.mark.parametrize(("call", "message"), ROWS)
def test_bad_input_gets_a_clear_message(bad_input_env, call, message):  # noqa: F811 (pytest passes the fixture)
    shown = call(bad_input_env)
    assert re.search(message, shown), shown
    assert not (bad_input_env.tmp / "never").exists()  # a run that cannot start leaves no folder behind
