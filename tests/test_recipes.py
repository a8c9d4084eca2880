"""Recipes (ddpm_core.recipes): each one builds a valid TrainConfig, slugs are stable, titles and notes promise no
times; the CLI lists them, starts a run from one (flags and --config on top), and refuses an unknown slug with one
`error:` line. Wrong calls run in process (fast); the one training run is a real process, as in tests/test_cli.py."""

from __future__ import annotations

import json
import re

import pytest

from ddpm_core import runs
from ddpm_core.config import TrainConfig, field_names
from ddpm_core.recipes import DEFAULT_RECIPE, RECIPES, Recipe, recipe, recipe_config
from ddpm_core.train import build_parser, new_run_config
from tests.runs_helpers import call_cli
from tests.test_cli import call_main

DURATION = re.compile(
    r"\b\d[\d,.]*\s*(s|ms|sec|secs|seconds?|min|mins|minutes?|h|hrs?|hours?)\b|\b(seconds?|minutes?|hours?)\b", re.I
)
TINY_TAIL = ["--preview-every", "0", "--checkpoint-every", "0", "--evaluate-n", "0", "--log-every", "1"]


def new_run(*argv) -> TrainConfig:
    return new_run_config(build_parser().parse_args([str(a) for a in argv]))


# ----------------------------------------------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("slug", RECIPES)
def test_every_recipe_builds_a_valid_train_config(slug):
    r = RECIPES[slug]
    assert isinstance(r, Recipe) and r.slug == slug and r.title and r.note
    assert set(r.overlay) <= set(field_names())
    config = recipe_config(slug)  # TrainConfig validates on construction
    assert {k: getattr(config, k) for k in r.overlay} == r.overlay
    assert {k: v for k, v in config.to_dict().items() if k not in r.overlay} == {
        k: v for k, v in TrainConfig().to_dict().items() if k not in r.overlay
    }  # every other field keeps TrainConfig's default


def test_slugs_are_stable_lowercase_kebab_and_the_default_is_cpu_digits():
    assert list(RECIPES) == ["cpu-digits", "cpu-mnist", "gpu-mnist", "2d-swiss-roll"]
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) for slug in RECIPES)
    assert DEFAULT_RECIPE == "cpu-digits" and RECIPES[DEFAULT_RECIPE].overlay["dataset"] == "digits"
    assert len({r.title for r in RECIPES.values()}) == len(RECIPES)  # a title names one recipe (links accept titles)


@pytest.mark.parametrize("text", [r.title for r in RECIPES.values()] + [r.note for r in RECIPES.values()])
def test_titles_and_notes_promise_no_durations(text):
    assert not DURATION.search(text), text


@pytest.mark.parametrize("text", ["in 20 s", "digits in a minute", "a few minutes on a GPU", "2 h", "90 sec"])
def test_the_duration_check_catches_what_it_should(text):
    assert DURATION.search(text)


def test_which_recipes_need_a_gpu_and_which_read_mnist():
    assert [s for s, r in RECIPES.items() if r.needs_gpu] == ["gpu-mnist"]
    cpu_mnist = recipe_config("cpu-mnist")
    assert (cpu_mnist.dataset, cpu_mnist.image_size, cpu_mnist.evaluate_n) == ("mnist", 0, 0)  # 28 px, not scored


def test_overrides_apply_and_unknown_slugs_or_fields_are_refused():
    assert recipe_config("gpu-mnist", steps=9, out="x").steps == 9
    assert recipe("2d-swiss-roll").config(lr=1e-3).lr == 1e-3
    with pytest.raises(ValueError, match="unknown recipe 'nope'; valid: cpu-digits, cpu-mnist, gpu-mnist, 2d-swiss"):
        recipe("nope")
    with pytest.raises(ValueError, match="unknown setting"):
        recipe_config("cpu-digits", no_such_field=1)


# ----------------------------------------------------------------------------------------------------------------
# The CLI


def test_list_recipes_prints_every_slug_title_and_note():
    rc, out, err = call_main("train", ["--list-recipes"])
    assert rc == 0 and not err
    header, *rows = out.strip().splitlines()
    assert header.split() == ["slug", "title", "note"] and len(rows) == len(RECIPES)
    for row, r in zip(rows, RECIPES.values(), strict=True):
        assert row.startswith(r.slug + " ") and r.title in row and row.endswith(r.note)


def test_the_help_documents_recipe_and_list_recipes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--recipe SLUG" in text and "--list-recipes" in text and "the recipe, then the file, then the flags" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--recipe", "nope"], "error: unknown recipe 'nope'; valid: cpu-digits, cpu-mnist, gpu-mnist, 2d-swiss-roll"),
        (["--recipe", "cpu-digits", "--resume"], "error: --recipe gives a new run's settings, but --resume continues"),
        (["--recipe", "cpu-digits", "--init-from", "runs/x"], "error: --recipe gives a new run's settings, but --init"),
    ],
)
def test_a_bad_recipe_call_exits_2_with_one_error_line(tmp_path, argv, message):
    out_dir = tmp_path / "never-made"
    rc, out, err = call_main("train", [*argv, "--out", out_dir])
    assert rc == 2 and err.startswith(message) and err.count("\n") == 1 and not out
    assert not out_dir.exists()


def test_flags_override_the_recipe():
    config = new_run("--recipe", "gpu-mnist", "--steps", 9, "--model", "tiny", "--out", "runs/x")
    assert (config.steps, config.model, config.out) == (9, "tiny", "runs/x")
    assert (config.image_size, config.batch_size, config.warmup) == (32, 256, 200)  # the recipe's
    assert new_run("--recipe", "2d-swiss-roll") == recipe_config("2d-swiss-roll")


def test_recipe_then_config_file_then_flags(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"steps": 11, "batch_size": 64}))
    config = new_run("--recipe", "2d-swiss-roll", "--config", path, "--batch-size", 32)
    assert (config.dataset, config.T, config.lr) == ("swiss_roll", 200, 5e-3)  # the recipe's
    assert (config.steps, config.batch_size) == (11, 32)  # the file's, then the flag's
    assert new_run("--config", path).dataset == TrainConfig().dataset  # no recipe: TrainConfig's defaults


def test_recipe_cpu_digits_trains_the_steps_asked_for(tmp_path):
    out = tmp_path / "run"
    result = call_cli("train", "--recipe", "cpu-digits", "--steps", 7, *TINY_TAIL, "--device", "cpu", "--out", out,
                     runs_root=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "done at step 7" in result.stdout
    assert [m["step"] for m in runs.read_metrics(out)] == list(range(1, 8))
    status = runs.read_status(out)
    assert (status["state"], status["step"]) == ("done", 7)
    saved = runs.read_json(out / runs.CONFIG)
    expected = recipe_config("cpu-digits", steps=7, preview_every=0, checkpoint_every=0, evaluate_n=0, log_every=1,
                             device="cpu", out=str(out))  # fmt: skip
    assert saved == expected.to_dict()
    overlay = RECIPES["cpu-digits"].overlay
    assert {k: saved[k] for k in overlay if k not in ("steps", "preview_every")} == {
        k: v for k, v in overlay.items() if k not in ("steps", "preview_every")
    }


@pytest.mark.parametrize("text", ["cpu-mnist", "MNIST 28×28 on a CPU", "GPU: MNIST 32×32", "CPU: digits in a minute"])
def test_a_recipe_is_named_by_its_slug_its_title_or_a_former_title(text):
    from ddpm_core.recipes import FORMER_TITLES, recipe_slug

    expected = FORMER_TITLES.get(text) or ("cpu-mnist" if "28" in text else text)
    assert recipe_slug(text) == expected and recipe_slug("nope") is None and recipe_slug(None) is None


def test_an_old_link_naming_a_former_title_opens_that_recipe():
    from tests.test_links import open_with

    at = open_with("train.py", {"recipe": "2D: swiss roll in 20 s"})
    assert at.selectbox(key="recipe").value == "2d-swiss-roll" and at.selectbox(key="dataset").value == "swiss_roll"
    assert not at.warning
