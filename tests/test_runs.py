"""The run folder's files: checkpoints that load (or fail with a message that says why, and never run code), atomic
writes, and run names that cannot leave the runs folder."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import safe_open, save_file

from ddpm_core import runs, train
from ddpm_core.config import TrainConfig
from ddpm_core.models import build_model


def tensors_and_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (safe_open is not a dict)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def test_a_run_folder_loads_its_ema_weights_by_default(shared):
    ema = runs.load_checkpoint(shared.path)
    raw = runs.load_checkpoint(shared.path, prefer_ema=False)
    assert ema.path == shared.path / runs.EMA and raw.path == shared.path / runs.MODEL
    assert ema.step == raw.step == 60
    assert not same_weights(ema.model, raw.model)  # 60 steps of averaging leave the EMA behind the raw weights
    assert not ema.model.training and not raw.model.training


def test_a_file_loads_by_itself_with_its_config(shared, tmp_path):
    alone = tmp_path / "elsewhere" / "copy.safetensors"
    alone.parent.mkdir()
    shutil.copy(shared.path / runs.EMA, alone)
    ckpt = runs.load_checkpoint(alone)
    assert ckpt.path == alone and ckpt.step == 60
    assert ckpt.config == shared.config
    assert ckpt.sample_shape == (1, 8, 8) and ckpt.data["classes"] == [str(i) for i in range(10)]
    assert ckpt.model_config == shared.config.model_config(in_channels=1, image_size=8)
    assert same_weights(ckpt.model, runs.load_checkpoint(shared.path).model)
    raw = runs.load_checkpoint(shared.path, prefer_ema=False)
    assert same_weights(runs.load_checkpoint(shared.path / runs.MODEL).model, raw.model)


def test_a_truncated_file_is_refused(shared, tmp_path):
    data = (shared.path / runs.EMA).read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.CheckpointError, match=r"truncated\.safetensors.*truncated or another format"):
        runs.load_checkpoint(bad)


def test_metadata_that_claims_another_architecture_is_refused(shared, tmp_path):
    tensors, meta = tensors_and_metadata(shared.path / runs.EMA)
    model_config = json.loads(meta["model_config"])
    assert model_config["base_channels"] == 8
    bad = tmp_path / "wider.safetensors"
    save_file(tensors, str(bad), metadata={**meta, "model_config": json.dumps({**model_config, "base_channels": 16})})
    with pytest.raises(runs.CheckpointError, match="do not fit the architecture"):
        runs.load_checkpoint(bad)


def test_weights_of_another_architecture_are_refused(shared, tmp_path):
    _, meta = tensors_and_metadata(shared.path / runs.EMA)
    wider = build_model(shared.config.replace(base_channels=16).model_config(in_channels=1, image_size=8))
    bad = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, str(bad), metadata=meta)
    with pytest.raises(runs.CheckpointError, match="do not fit the architecture"):
        runs.load_checkpoint(bad)


def test_a_safetensors_file_without_our_metadata_is_refused(shared, tmp_path):
    tensors, _ = tensors_and_metadata(shared.path / runs.EMA)
    bad = tmp_path / "foreign.safetensors"
    save_file(tensors, str(bad))
    with pytest.raises(runs.CheckpointError, match="no DDPM Explorer metadata"):
        runs.load_checkpoint(bad)


@pytest.mark.parametrize("missing", ["train_config", "model_config", "data", "step"])
def test_metadata_without_its_config_is_refused(shared, tmp_path, missing):
    tensors, meta = tensors_and_metadata(shared.path / runs.EMA)
    del meta[missing]
    bad = tmp_path / "partial.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(runs.CheckpointError, match=f"missing or invalid config.*{missing}"):
        runs.load_checkpoint(bad)


def test_missing_checkpoints_say_what_is_missing(tmp_path):
    with pytest.raises(runs.CheckpointError, match="does not exist"):
        runs.load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(runs.CheckpointError, match=r"holds no ema\.safetensors or model\.safetensors"):
        runs.load_checkpoint(tmp_path)
    with pytest.raises(runs.CheckpointError, match="is missing: the run cannot be resumed"):
        runs.load_training_state(tmp_path / runs.STATE)


def test_a_truncated_training_state_is_refused(shared, tmp_path):
    data = (shared.path / runs.STATE).read_bytes()
    bad = tmp_path / runs.STATE
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.CheckpointError, match="not a training state this tool wrote"):
        runs.load_training_state(bad)
    assert runs.load_training_state(shared.path / runs.STATE)["step"] == 60


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears only if someone runs the pickle's code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_that_carry_code_are_refused_and_never_run(shared, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    torch.save({"step": 1, "optimizer": _Payload(marker)}, evil)

    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(evil, folder / runs.STATE)
    shutil.copy(evil, folder / runs.MODEL)
    with pytest.raises(runs.CheckpointError, match="not a training state this tool wrote"):
        runs.load_training_state(folder / runs.STATE)
    for path in (evil, folder, folder / runs.MODEL):
        with pytest.raises(runs.CheckpointError, match="not a readable safetensors checkpoint"):
            runs.load_checkpoint(path)
    assert not marker.exists()

    torch.load(evil, weights_only=False)["optimizer"].close()  # the control: an unsafe load does run the payload
    assert marker.exists()


def test_resume_refuses_a_training_state_that_carries_code(shared, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(shared.path, run)
    marker = tmp_path / "pwned"
    with open(run / runs.STATE, "wb") as f:
        pickle.dump({"step": 60, "optimizer": _Payload(marker)}, f, protocol=2)
    assert train.main(["--out", str(run), "--resume", "--steps", "70"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training_state.pt is not a training state this tool wrote" in err
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    runs.write_json(path, {"state": "running"})

    def fail_halfway(tmp: Path):
        tmp.write_text('{"state": "do')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        runs.atomic_write(path, fail_halfway)
    assert runs.read_json(path) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_failed_rename_keeps_the_old_checkpoint(shared, tmp_path, monkeypatch):
    path = tmp_path / runs.EMA
    shutil.copy(shared.path / runs.EMA, path)
    before = path.read_bytes()
    ckpt = runs.load_checkpoint(path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        runs.save_weights(path, ckpt.model, ckpt.config, ckpt.model_config, 61, ckpt.data)
    monkeypatch.undo()
    assert path.read_bytes() == before and runs.load_checkpoint(path).step == 60
    assert [p.name for p in tmp_path.iterdir()] == [runs.EMA]


def test_read_metrics_skips_a_half_written_line(tmp_path):
    runs.append_metrics(tmp_path, {"step": 1, "loss": 1.0})
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"step": 2, "lo')
    assert runs.read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]
    runs.truncate_metrics(tmp_path, 1)
    runs.append_metrics(tmp_path, {"step": 2, "loss": 0.5})
    assert [r["step"] for r in runs.read_metrics(tmp_path)] == [1, 2]


# ----------------------------------------------------------------------------------------------------------------
# Run names


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../x", "x"), ("/etc/passwd", "etc-passwd"), ("ok-name_1.2", "ok-name_1.2"), ("a" * 300, "a" * runs.MAX_NAME),
     ("  my run  ", "my-run"), ("..\\..\\win", "win"), ("x/../../y", "x-..-..-y"), (".hidden", "hidden")],
)  # fmt: skip
def test_run_names_stay_inside_the_runs_folder(tmp_path, name, expected):
    slug = runs.sanitize_run_name(name)
    assert slug == expected
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", slug)
    root = (tmp_path / "runs").resolve()
    config = TrainConfig(name=name)
    folder = runs.run_dir_for(config, root).resolve()
    assert folder.parent == root and folder.name == slug


@pytest.mark.parametrize("name", ["", "   ", "数字", "..", "../..", "///", ".-.-"])
def test_unusable_run_names_are_refused(name):
    with pytest.raises(ValueError, match=r"has no letters or digits; use e\.g\."):
        runs.sanitize_run_name(name)


def test_run_dir_for_name_out_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path / "from-env"))
    assert runs.run_dir_for(TrainConfig(name="a b")) == tmp_path / "from-env" / "a-b"
    assert runs.run_dir_for(TrainConfig(name="a b"), tmp_path) == tmp_path / "a-b"
    assert runs.run_dir_for(TrainConfig(name="a b", out=str(tmp_path / "explicit"))) == tmp_path / "explicit"
    default = runs.run_dir_for(TrainConfig(dataset="moons"))
    assert default.parent == tmp_path / "from-env" and re.fullmatch(r"moons-\d{8}-\d{6}", default.name)
