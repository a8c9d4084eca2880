"""The app's side of "beyond the course": the Train page's objective, guidance and fine-tuning settings reach the run's
config, a fine-tuned run shows samples before and after, and the Sample page offers a conditional checkpoint's
class, guidance scale and grid of scales, and the time-step importance view."""

from __future__ import annotations

import json

import pytest

from ddpm_core import runs
from explorer.checkpoints import BUNDLED as BUNDLED_FOLDER
from tests.apptest_helpers import rerun
from tests.runs_helpers import TINY, call_cli, flags
from tests.test_links import open_with
from tests.test_page_train import at, launch, rerun_until, root, state  # noqa: F401 (fixtures)

BUNDLED = "assets/checkpoints/digits.safetensors"


def test_the_objective_settings_reach_the_runs_config(at, root):  # noqa: F811
    assert at.radio(key="prediction_type").value == "eps" and not at.checkbox(key="class_conditional").value
    at.radio(key="prediction_type").set_value("v")
    at.radio(key="loss_weighting").set_value("min_snr")
    at.checkbox(key="class_conditional").set_value(True)
    rerun(at)
    latex = " ".join(e.value for e in at.latex)
    assert r"v &= \sqrt{\bar\alpha_t}\,\epsilon" in latex and r"\min(\mathrm{SNR}_t" in latex and "varnothing" in latex
    at.number_input(key="min_snr_gamma").set_value(3.0)
    at.number_input(key="label_dropout").set_value(0.2)
    launch(at, "objective", steps=10, evaluate_n=0)
    rerun_until(at, lambda at: state(root / "objective") == "done", "finished run")
    config = runs.read_json(root / "objective" / runs.CONFIG)
    assert (config["prediction_type"], config["loss_weighting"], config["min_snr_gamma"]) == ("v", "min_snr", 3.0)
    assert (config["class_conditional"], config["label_dropout"]) == (True, 0.2)
    assert runs.load_checkpoint(root / "objective").model_config.prediction == "v"


def test_picking_a_checkpoint_to_fine_tune_copies_its_settings(at, root):  # noqa: F811
    at.number_input(key="T").set_value(200)
    at.selectbox(key="init_from").set_value(str(BUNDLED_FOLDER / "digits.safetensors"))
    rerun(at)
    base = runs.load_checkpoint(BUNDLED).config
    assert at.number_input(key="T").value == base.T and at.selectbox(key="dataset").value == base.dataset
    assert at.selectbox(key="init_from").value.endswith("digits.safetensors")


def test_a_fine_tuned_run_shows_samples_before_and_after(root):  # noqa: F811
    result = call_cli("train", "--init-from", BUNDLED, "--classes", "3", "--steps", 5, "--warmup", 0,
                     "--preview-every", 0, "--evaluate-n", 0, "--out", root / "threes", runs_root=root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = open_with("train.py", {"run": "threes"})
    captions = [c for image in page.image for c in image.captions]
    assert captions[-2:] == ["before: the starting checkpoint", "after: fine-tuned"]
    assert any(e.label.startswith("Before and after fine-tuning") for e in page.expander)


@pytest.fixture
def conditional(root):  # noqa: F811
    result = call_cli("train", *flags(TINY), "--steps", 20, "--class-conditional", "--out", root / "cond",
                     runs_root=root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root / "cond"


def test_a_conditional_checkpoint_gets_a_class_a_scale_and_a_grid_of_scales(conditional):
    page = open_with("sample.py", {"checkpoint": "cond", "class_label": "7", "guidance": "3.0", "sampler": "DDIM",
                                 "steps": "5", "n": "8"})  # fmt: skip
    assert page.selectbox(key="class_label").value == 7 and page.slider(key="guidance").value == 3.0
    assert any("varnothing" in e.value for e in page.latex)
    page.button(key="generate").click()
    rerun(page)
    assert any("8 samples (DDIM, 5 steps" in m.value for m in page.markdown)
    page.multiselect(key="guidance_scales").set_value([0.0, 4.0])
    page.button(key="guidance_grid").click()
    rerun(page)
    grid = [c.value for c in page.caption if "classifier agrees" in c.value]
    assert len(grid) == 2 and all(c.split(":")[1].strip().split("%")[0].isdigit() for c in grid)
    assert [c for image in page.image for c in image.captions][-2:] == ["s = 0", "s = 4"]


def test_an_unconditional_checkpoint_has_no_class_picker_and_measures_its_importance(root):  # noqa: F811
    page = open_with("sample.py", {"checkpoint": "digits"})
    assert not [w for w in page.selectbox if w.key == "class_label"] and not [
        s for s in page.slider if s.key == "guidance"
    ]
    page.button(key="measure_importance").click()
    rerun(page)
    spec = json.loads(page.get("plotly_chart")[-1].proto.spec)
    names = [trace["name"] for trace in spec["data"]]
    assert names == ["ε-error of this model", "density of λ: linear (this model's)", "density of λ: cosine"]
    assert len(spec["data"][0]["x"]) == 50
