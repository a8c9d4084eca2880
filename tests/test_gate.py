"""The one gate (explorer.gate): its decisions, a scan of the app's source so that no button escapes it, and each
gated button met with a capped classroom and a link that asks for more: it ends in a clamp or a refusal."""

from __future__ import annotations

import ast

import pytest

from ddpm_core.config import TrainConfig
from explorer import gate
from explorer import train_queue as tq
from explorer.classroom import Classroom
from explorer.jobs import LaunchError
from explorer.owners import Requester
from tests.apptest_helpers import rerun
from tests.conftest import ROOT
from tests.test_classroom_pages import BRIEF, BUNDLED, classroom, open_page, root, warnings  # noqa: F401
from tests.test_page_train import hand_made_run

CAPPED = Classroom(max_n=10, max_steps=20, max_train_steps=50)


# ----------------------------------------------------------------------------------------------------------------
# Decisions


def test_a_request_within_the_caps_passes_as_it_is():
    assert gate.sampling(CAPPED, gate.Sampling(10, (20,))) == gate.Decision(10)
    assert gate.sampling(CAPPED, gate.Sampling(5, (20, 20))) == gate.Decision(5)  # 200 sample-steps: the budget


def test_too_many_samples_are_clamped_to_the_budget_of_sample_steps():
    d = gate.sampling(CAPPED, gate.Sampling(8, (20, 20, 10), what="The comparison"))
    assert d.allowed and d.n == 4 and d.n * 50 <= 10 * 20  # 200 sample-steps over three cells of 50 steps
    assert "The comparison: 4 samples per cell instead of 8" in d.note and "200 sample-steps" in d.note
    assert gate.sampling(CAPPED, gate.Sampling(50, (1,))).n == 10  # never more than max_n in a cell


def test_what_cannot_be_cut_back_is_refused():
    assert (
        "takes 21 steps, more than this server allows per request (20)"
        in gate.sampling(CAPPED, gate.Sampling(1, (21,))).refusal
    )
    too_many_cells = gate.sampling(CAPPED, gate.Sampling(1, (20,) * 11))  # 220 > 200 even at one sample each
    assert not too_many_cells.allowed and "220 sample-steps" in too_many_cells.refusal
    fixed = gate.sampling(CAPPED, gate.Sampling(256, (1,) * 50, clamp=False, what="Measuring"))
    assert fixed.refusal == "256 samples are more than this server allows per request (10)."
    assert not gate.sampling(CAPPED, gate.Sampling(8, (10, 20), clamp=False)).allowed  # 240 > 200
    assert not gate.sampling(CAPPED, gate.Sampling(0, (1,))).allowed


def test_points_count_less_against_max_n():
    assert gate.sampling(CAPPED, gate.Sampling(80, (20,)), per_sample=8).n == 80
    assert gate.sampling(CAPPED, gate.Sampling(81, (20,)), per_sample=8).n == 80


def test_training_is_gated_by_the_switch_and_the_steps_per_run():
    assert gate.training(CAPPED, 50, "off").allowed
    assert "51 training steps are more than this server allows per run (50" in gate.training(CAPPED, 51, "off").refusal
    assert gate.training(Classroom(training=False), 1, "off") == gate.Decision(refusal="off")


# ----------------------------------------------------------------------------------------------------------------
# No button escapes the gate


def _button_keys() -> set[str]:
    """The key of every *button(...) call in pages/ and explorer/ (an f-string key: its constant prefix)."""
    keys = set()
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "explorer").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not node.func.attr.endswith("button"):
                continue
            key = next((k.value for k in node.keywords if k.arg == "key"), None)
            assert key is not None, f"{path.name}:{node.lineno}: a button without a key cannot be checked"
            if isinstance(key, ast.JoinedStr):
                key = key.values[0]
            assert isinstance(key, ast.Constant), f"{path.name}:{node.lineno}: a button key the scan cannot read"
            keys.add(key.value)
    return keys


def test_every_button_is_gated_or_says_why_it_needs_no_gate():
    found = _button_keys()
    assert {"generate", "compare", "guidance_grid", "measure_importance", "launch", "resume", "stop"} <= found
    assert found - set(gate.BUTTONS) == set(), "new buttons: add them to explorer.gate.BUTTONS"
    assert set(gate.BUTTONS) - found == set(), "explorer.gate.BUTTONS lists buttons the app no longer has"


# ----------------------------------------------------------------------------------------------------------------
# Each gated button, capped, asked for more

CAPS = "[sampling]\nmax_n = 4\nmax_steps = 20\n\n[training]\nmax_steps = 40\n"


def test_generate_refuses_a_link_over_the_caps(root, classroom):  # noqa: F811
    classroom(CAPS)
    at = open_page("sample.py", checkpoint="digits", sampler="DDIM", steps="500", n="500")
    assert at.number_input(key="n").value == 4 and at.number_input(key="steps").value <= 20
    at.button(key="generate").click()
    rerun(at)
    assert any("4 samples (DDIM, " in m.value for m in at.markdown)


def test_compare_is_clamped_to_the_budget(root, classroom):  # noqa: F811
    classroom(CAPS)
    at = open_page("sample.py", checkpoint="digits", sampler="DDIM", steps="10", n="4")
    picker = at.multiselect(key="compare_settings")
    assert set(picker.options) == {"DDIM-20", "DDIM-10"}  # the others are over max_steps
    picker.set_value(["DDIM-20", "DDIM-10"])
    rerun(at).button(key="compare").click()
    rerun(at)  # 4 samples × 30 steps = 120 sample-steps, over 4 × 20 = 80: two a cell (60)
    assert "The comparison: 2 samples per cell instead of 4, to keep within this server's 80 sample-steps" in warnings(
        at
    )
    assert any(c.value.startswith("2 samples per cell") for c in at.caption)


def test_the_guidance_grid_keeps_to_the_caps(root, classroom):  # noqa: F811
    classroom(CAPS)
    at = open_page("sample.py", checkpoint="digits_cond", sampler="DDIM", steps="20", n="4")
    at.multiselect(key="guidance_scales").set_value([0.0, 4.0])
    rerun(at).button(key="guidance_grid").click()
    rerun(at)  # 2 scales × 10 classes × 20 steps = 400 sample-steps for one sample a class: over 80
    assert "The grid needs" in "\n".join(e.value for e in at.error)
    assert not [c for c in at.caption if "classifier agrees" in c.value]


def test_measure_is_refused_over_the_caps(root, classroom):  # noqa: F811
    classroom(CAPS)
    at = open_page("sample.py", checkpoint="digits")
    at.button(key="measure_importance").click()
    rerun(at)
    assert "256 samples are more than this server allows per request (4)." in [e.value for e in at.error]
    assert not at.get("plotly_chart") or all("density" not in c.proto.spec for c in at.get("plotly_chart"))


def test_launch_and_resume_keep_to_the_steps_per_run(root, classroom):  # noqa: F811
    classroom(CAPS)
    config = TrainConfig(**{**BRIEF, "device": "cpu", "steps": 41})
    assert tq.launch(config, root / "long", Requester("x")) is False and not (root / "long").exists()
    with pytest.raises(LaunchError, match="41 training steps are more than this server allows per run"):
        tq.registry().submit(config, root / "long", who=Requester("x"))
    stopped = hand_made_run(root, "stopped-run", [1.0, 0.5], state="stopped")
    with pytest.raises(LaunchError, match="1,000 training steps are more than"):
        tq.registry().resume(stopped, 1000)
    at = open_page("train.py", steps="41")
    at.text_input(key="name").set_value("capped")
    rerun(at).button(key="launch").click()
    rerun(at)
    assert any("41 training steps are more than this server allows per run (40" in e.value for e in at.error)
    assert not (root / "capped").exists()
