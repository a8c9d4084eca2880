"""TrainConfig: validation messages, JSON round trips, the model it asks for, and the CLI flags derived from it."""

import argparse
import dataclasses
import json
import math
import re
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_core import make_schedule
from ddpm_core.config import TrainConfig, add_config_flags, config_from_args, field_names
from ddpm_core.data import DATASETS, POINT_DATASETS
from ddpm_core.models import PRESETS, ModelConfig, build_model

FLOAT_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if typing.get_type_hints(TrainConfig)[f.name] is float]

# Non-default values for every kind of field: strings, ints, floats, bools, a list and a dict.
CUSTOM = dict(
    dataset="moons",
    classes=["0", "3"],
    n_points=500,
    T=200,
    schedule="sigmoid",
    schedule_params={"tau": 0.5},
    rescale_zero_terminal_snr=True,
    lr=3e-4,
    batch_size=32,
    epochs=2,
    ema_decay=0.99,
    mixed_precision=False,
    preview_steps=20,
    name="toy",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return p


def argv_for(config: TrainConfig) -> list[str]:
    """The command line a user would type to ask for every value of `config`."""
    argv = []
    for name, value in config.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            argv += [flag, ",".join(value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


# ---------------------------------------------------------------------------------------------------------------
# Defaults, round trips and files


def test_defaults_validate_and_build_a_model():
    c = TrainConfig()
    assert not c.is_points
    model_config = c.model_config(in_channels=1, image_size=8)
    assert build_model(model_config).config == model_config
    assert c.make_schedule().T == c.T


def test_dict_and_json_round_trips_give_the_same_config():
    c = TrainConfig(**CUSTOM)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig.from_dict(json.loads(c.to_json())) == c
    assert json.loads(c.to_json()) == c.to_dict()
    assert c.replace(lr=1e-3) == TrainConfig(**{**CUSTOM, "lr": 1e-3})


def test_to_dict_is_a_copy():
    c = TrainConfig(classes=["1"])
    c.to_dict()["classes"].append("2")
    assert c.classes == ["1"]


def test_from_json_file_reads_what_to_json_wrote(tmp_path):
    c = TrainConfig(**CUSTOM)
    path = tmp_path / "config.json"
    path.write_text(c.to_json())
    assert TrainConfig.from_json_file(path) == c
    assert TrainConfig.from_json_file(str(path)) == c


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"lr": 0.1,', "is not valid JSON"),
        (b"\xff\xfe\x00", "is not valid JSON"),
        ('[{"lr": 0.1}]', "must hold a JSON object"),
        ('"lr"', "must hold a JSON object"),
        ('{"lr": 0.1, "learning_rate": 0.1}', "unknown setting\\(s\\) learning_rate"),
        ('{"lr": -1}', "lr must be positive"),
    ],
)
def test_from_json_file_rejects_bad_content(tmp_path, content, match):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_json_file(path)


def test_a_missing_config_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=f"config file {re.escape(str(tmp_path / 'nope.json'))} does not exist"):
        TrainConfig.from_json_file(tmp_path / "nope.json")


def test_unknown_keys_are_rejected_listing_every_valid_one():
    with pytest.raises(ValueError, match="unknown setting\\(s\\) batchsize, epoch; valid: ") as err:
        TrainConfig.from_dict({"batchsize": 64, "epoch": 3, "lr": 1e-3})
    valid = str(err.value).split("valid: ", 1)[1].split(", ")
    assert valid == [f.name for f in dataclasses.fields(TrainConfig)] == field_names()


# ---------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(batch_size=0), "batch_size must be positive, got 0"),
        (dict(batch_size=5000), "batch_size must be at most 4096, got 5000"),
        (dict(lr=0.0), "lr must be positive, got 0.0"),
        (dict(lr=-1e-3), "lr must be positive"),
        (dict(lr=1.5), "lr must be at most 1, got 1.5"),
        (dict(log_every=0), "log_every must be positive"),
        (dict(preview_n=0), "preview_n must be positive"),
        (dict(preview_steps=0), "preview_steps must be positive"),
        (dict(n_points=0), "n_points must be positive"),
        (dict(steps=0, epochs=0), "steps must be positive \\(or epochs > 0\\), got steps=0, epochs=0"),
        (dict(epochs=-1), "steps must be positive \\(or epochs > 0\\), got steps=3000, epochs=-1"),
        (dict(ema_decay=1.0), "ema_decay must lie in \\[0, 1\\), got 1.0"),
        (dict(ema_decay=-0.1), "ema_decay must lie in \\[0, 1\\), got -0.1"),
        (dict(dataset="mnsit"), f"unknown dataset 'mnsit'; valid: {', '.join(DATASETS)}"),
        (dict(model="huge"), f"unknown model preset 'huge'; valid: auto, {', '.join(PRESETS)}"),
        (dict(schedule="cosin"), "unknown schedule 'cosin'; valid names: linear, "),
        (dict(dataset="moons", model="tiny"), "2D point data sets need the mlp model, got model='tiny'"),
        (dict(dataset="digits", model="mlp"), "image data sets need a UNet preset, got model='mlp'; valid: auto, tiny"),
        (dict(channels=2), "channels must be 1 \\(grayscale\\) or 3 \\(RGB\\), got 2"),
        (dict(resize_mode="stretch"), "resize_mode must be pad or resize, got 'stretch'"),
        (dict(T=100, preview_steps=101), "preview_steps \\(101\\) cannot exceed T \\(100\\)"),
        (dict(dataset="folder"), "dataset=folder needs --folder PATH"),
    ],
)
def test_invalid_settings_raise_naming_the_setting(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


@pytest.mark.parametrize(
    "name", ["warmup", "grad_clip", "weight_decay", "preview_every", "checkpoint_every", "image_size"]
)
def test_settings_where_zero_means_off_reject_negatives(name):
    TrainConfig(**{name: 0})
    with pytest.raises(ValueError, match=f"{name} must be ≥ 0, got -1"):
        TrainConfig(**{name: -1})


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_setting_must_be_finite(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number, got {value}"):
        TrainConfig(**{name: value})


def test_float_fields_are_found():
    assert {"lr", "dropout", "ema_decay", "grad_clip", "weight_decay"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize(
    "settings",
    [
        dict(schedule_params={"beta_end": 2.0}),
        dict(schedule="cosine", schedule_params={"beta_end": 0.02}),
        dict(schedule="sigmoid", schedule_params={"tau": 0.0}),
        dict(schedule_params={"beta_start": math.nan}),
        dict(T=1, preview_steps=1),
        dict(T=10**7, preview_steps=1),
    ],
)
def test_bad_schedule_settings_raise_the_schedules_own_message(settings):
    c = {**TrainConfig().to_dict(), **settings}
    with pytest.raises(ValueError) as from_schedule:
        make_schedule(c["schedule"], c["T"], **c["schedule_params"])
    with pytest.raises(ValueError, match=re.escape(str(from_schedule.value))):
        TrainConfig(**settings)


def test_a_tiny_T_is_reported_as_such_not_as_a_preview_problem():
    with pytest.raises(ValueError, match="T \\(number of timesteps\\) must be at least 2, got 1"):
        TrainConfig(T=1)


@pytest.mark.parametrize("dataset", POINT_DATASETS)
def test_point_data_sets_accept_auto_and_mlp(dataset):
    assert TrainConfig(dataset=dataset).is_points and TrainConfig(dataset=dataset, model="mlp").is_points


# ---------------------------------------------------------------------------------------------------------------
# The model a run asks for, and how long it runs


@pytest.mark.parametrize("in_channels, image_size", [(1, 8), (1, 32), (3, 32)])
def test_auto_is_the_tiny_unet_for_images(in_channels, image_size):
    got = TrainConfig(model="auto").model_config(in_channels, image_size)
    assert got == ModelConfig(in_channels=in_channels, image_size=image_size, **PRESETS["tiny"])
    assert got == TrainConfig(model="tiny").model_config(in_channels, image_size)


def test_auto_is_the_mlp_for_points():
    got = TrainConfig(dataset="swiss_roll").model_config(in_channels=2, image_size=0)
    assert got == ModelConfig(in_channels=2, **PRESETS["mlp"]) and got.kind == "mlp"


def test_width_dropout_and_classes_override_the_preset():
    got = TrainConfig(model="small", base_channels=32, dropout=0.0).model_config(3, 32, num_classes=10)
    assert (got.base_channels, got.dropout, got.num_classes) == (32, 0.0, 10)
    assert got.channel_mults == PRESETS["small"]["channel_mults"]
    kept = TrainConfig(model="small").model_config(3, 32)
    assert (kept.base_channels, kept.dropout) == (PRESETS["small"]["base_channels"], PRESETS["small"]["dropout"])


def test_a_width_the_unet_cannot_use_fails_when_the_model_is_made():
    c = TrainConfig(base_channels=20)  # valid here: whether it fits depends on the model, known only with the data
    with pytest.raises(ValueError, match="base_channels must be a multiple of 8"):
        c.model_config(1, 8)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100_000), st.integers(1, 4096), st.integers(1, 50))
def test_epochs_count_partial_batches(n, batch_size, epochs):
    c = TrainConfig(batch_size=batch_size, epochs=epochs)
    batches = n // batch_size + (n % batch_size > 0)
    assert c.total_steps(n) == epochs * batches
    assert TrainConfig(batch_size=batch_size, steps=123).total_steps(n) == 123


# ---------------------------------------------------------------------------------------------------------------
# CLI flags


def test_given_flags_override_the_defaults_and_nothing_else():
    argv = ["--batch-size", "64", "--schedule", "cosine", "--schedule-params", '{"s": 0.01}', "--classes", "3,5"]
    c = config_from_args(parser().parse_args([*argv, "--no-mixed-precision", "--lr", "1e-3"]))
    given = dict(batch_size=64, schedule="cosine", schedule_params={"s": 0.01}, classes=["3", "5"])
    given |= dict(mixed_precision=False, lr=1e-3)
    assert c.to_dict() == {**TrainConfig().to_dict(), **given}


@pytest.mark.parametrize("base", [TrainConfig(**CUSTOM), TrainConfig(**CUSTOM).to_dict()])
def test_flags_not_given_keep_the_base_configs_values(base):
    c = config_from_args(parser().parse_args(["--lr", "1e-3", "--mixed-precision"]), base)
    assert c == TrainConfig(**{**CUSTOM, "lr": 1e-3, "mixed_precision": True})


def test_every_value_of_a_config_can_be_given_on_the_command_line():
    c = TrainConfig(**CUSTOM)
    assert config_from_args(parser().parse_args(argv_for(c))) == c
    d = TrainConfig(download=True, folder="x", dataset="folder", channels=3, image_size=16, warmup=0, grad_clip=0.5)
    assert config_from_args(parser().parse_args(argv_for(d))) == d


def test_an_empty_classes_flag_clears_the_base_classes():
    c = config_from_args(parser().parse_args(["--classes", ""]), TrainConfig(classes=["1"]))
    assert c.classes == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--schedule-params", "[1]"], "expected a JSON object"),
        (["--schedule-params", "{beta_end: 1}"], "not valid JSON"),
        (["--batch-size", "many"], "invalid int value"),
        (["--lr", "fast"], "invalid float value"),
        (["--batchsize", "3"], "unrecognized arguments"),
    ],
)
def test_bad_flag_values_make_argparse_exit_with_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_flag_values_that_parse_but_do_not_validate_raise_value_error():
    with pytest.raises(ValueError, match="batch_size must be positive"):
        config_from_args(parser().parse_args(["--batch-size", "0"]))


def test_every_field_has_a_flag_with_help():
    actions = {a.dest: a for a in parser()._actions if a.dest != "help"}
    assert sorted(actions) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    for name, action in actions.items():
        assert action.option_strings[0] == "--" + name.replace("_", "-")
        assert action.default is None  # so that a flag not given keeps the base config's value
        description = re.sub(r"\(default: .*\)$", "", action.help).strip()
        assert description, f"--{name} has no help beyond its default"
    assert "--no-mixed-precision" in parser().format_help()  # and the help renders
