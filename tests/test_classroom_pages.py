"""Classroom mode on the Train and Sample pages through AppTest: a link (query parameters) restores a view and bad
link values fall back with a notice; the teacher's switch hides launching and the registry refuses it however it is
asked; runs queue first come first served with room for one, and each browser session has its own limit; a locked
Sample setting is greyed out whatever the link says; sampling requests keep to the caps, and a cancelled sampling
keeps no result. Each AppTest is one browser session; classroom files are written to tmp_path."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from ddpm_core import run_history as rh
from ddpm_core import runs
from ddpm_core.config import TrainConfig
from explorer import train_queue as tq
from explorer.classroom import ENVIRONMENT
from explorer.jobs import OFF, LaunchError
from explorer.owners import Requester
from tests.apptest_helpers import rerun
from tests.conftest import ROOT
from tests.test_page_train import TINY_FORM, fill, hand_made_run, rerun_until

BUNDLED = ROOT / "assets" / "checkpoints"
DIGITS, MOONS = str(BUNDLED / "digits.safetensors"), str(BUNDLED / "moons.safetensors")
MNIST = str(BUNDLED / "mnist.safetensors")  # the Sample page's default
SWISS_ROLL = "2d-swiss-roll"
BRIEF = {**TINY_FORM, "steps": 5, "preview_every": 0, "checkpoint_every": 0, "evaluate_n": 0}  # a quick turn
LONG = {**BRIEF, "steps": 100_000}  # trains until stopped


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """Runs in tmp_path/runs, one torch thread for the trainers, no classroom setting from the caller's shell."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(runs_root))
    yield runs_root
    reg = tq.registry()  # the app's one registry: no trainer and no queued run outlives the test
    for path in reg.queue(runs_root):
        reg.cancel(path)
    for path in reg.active(runs_root):
        if (job := reg.job(path)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()


@pytest.fixture
def classroom(tmp_path, monkeypatch, root):
    """Write the teacher's classroom file and point $DDPM_EXPLORER_CONFIG at it."""

    def write(text: str) -> Path:
        path = tmp_path / "classroom.toml"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(path))
        return path

    return write


def open_page(file: str, **query: str) -> AppTest:
    """A new browser session that opens a link to pages/<file> with these query parameters (they survive the app's
    first run and the switch to the page, as in a browser)."""
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    at.query_params.update(query)
    rerun(at)
    at.switch_page(str(ROOT / "pages" / file))
    return rerun(at)


def warnings(at: AppTest) -> str:
    return "\n".join(w.value for w in at.warning)


def view_link(at: AppTest) -> str:
    (link,) = [c.value for c in at.code if c.value.startswith("http")]
    return link


SAMPLE_KEYS = ("checkpoint", "sampler", "steps", "eta", "n", "seed", "clip_x0", "variance")
TRAIN_KEYS = ("recipe", "dataset", "model", "device", "steps", "batch_size", "lr", "T", "schedule", "run", "smoothing")


def link_query(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query))


def find(at: AppTest, kind: str, key: str) -> list:
    return [w for w in at.get(kind) if w.key == key]


def widget_value(at: AppTest, key: str):
    """The value of the widget with this key, whatever its kind; None when the page does not show it."""
    for kind in ("selectbox", "radio", "number_input", "slider", "checkbox"):
        if found := find(at, kind, key):
            return found[0].value
    return None


def launch(at: AppTest, name: str, **settings) -> AppTest:
    fill(at, device="cpu", **{**BRIEF, **settings})
    at.text_input(key="name").set_value(name)
    rerun(at).button(key="launch").click()
    return rerun(at)


def texts(at: AppTest, kind: str) -> list[str]:
    return [el.value for el in getattr(at, kind)]


# ----------------------------------------------------------------------------------------------------------------
# Links


def test_a_sample_link_restores_the_view_and_follows_changes(root):
    at = open_page("sample.py", checkpoint="moons", sampler="DDIM", steps="20", eta="0.5", n="50", seed="7",
                   clip_x0="true")  # fmt: skip
    assert not at.warning, warnings(at)
    assert at.selectbox(key="checkpoint").value == MOONS
    assert (at.radio(key="sampler").value, at.number_input(key="steps").value, at.slider(key="eta").value) == (
        "ddim", 20, 0.5)  # fmt: skip
    assert (at.number_input(key="n").value, at.number_input(key="seed").value) == (50, 7)
    assert at.checkbox(key="clip_x0").value  # off by default for points: the link turned it on
    at.number_input(key="seed").set_value(8)
    rerun(at)  # the browser's address follows the widget; the page's "Copy link" shows the same
    link = view_link(at)
    assert link.startswith("http://localhost:8501/sample?") and "seed=8" in link and "checkpoint=moons" in link
    again = open_page("sample.py", **link_query(link))  # someone else opens the link
    assert {k: widget_value(again, k) for k in SAMPLE_KEYS} == {k: widget_value(at, k) for k in SAMPLE_KEYS}


def test_a_train_link_applies_its_recipe_then_its_own_values(root):
    hand_made_run(root, "first", [1.0, 0.5])
    hand_made_run(root, "second", [0.8, 0.4])  # the most recent: the picker's default
    at = open_page("train.py", recipe=SWISS_ROLL, steps="500", lr="0.01", run="first", smoothing="0.5")
    assert not at.warning, warnings(at)
    assert at.selectbox(key="recipe").value == SWISS_ROLL
    assert (at.selectbox(key="dataset").value, at.number_input(key="batch_size").value) == ("swiss_roll", 256)
    assert at.number_input(key="T").value == 200  # the recipe's, which the link did not repeat
    assert (at.number_input(key="steps").value, at.number_input(key="lr").value) == (500, 0.01)  # the link's
    assert (at.selectbox(key="run").value, at.slider(key="smoothing").value) == ("first", 0.5)
    fill(at, steps=700)  # a later change by the user wins, and the link follows it
    assert at.number_input(key="steps").value == 700 and "steps=700" in view_link(at)
    again = open_page("train.py", **link_query(view_link(at)))
    assert {k: widget_value(again, k) for k in TRAIN_KEYS} == {k: widget_value(at, k) for k in TRAIN_KEYS}
    at.selectbox(key="recipe").set_value("cpu-digits")
    rerun(at)  # choosing a recipe still fills the form
    assert (at.selectbox(key="dataset").value, at.number_input(key="steps").value) == ("digits", 1500)
    assert "recipe=" not in view_link(at) and "steps=" not in view_link(at)  # back to the defaults: a short link


def test_a_link_names_a_recipe_by_its_slug_or_its_title_and_an_unknown_one_gets_a_notice(root):
    hand_made_run(root, "only", [1.0])  # a page with a run shows its "Copy link" (one without stops early)
    at = open_page("train.py", recipe="2D: swiss roll")  # the title: what the address bar shows (Streamlit's binding)
    assert not at.warning, warnings(at)
    assert (at.selectbox(key="recipe").value, at.number_input(key="T").value) == (SWISS_ROLL, 200)
    assert link_query(view_link(at))["recipe"] == SWISS_ROLL  # "Copy link" writes the slug
    at = open_page("train.py", recipe="swiss-roll")
    assert at.selectbox(key="recipe").value == "cpu-digits" and at.number_input(key="steps").value == 1500
    assert ("The link's recipe=swiss-roll is not one of cpu-digits, cpu-mnist, gpu-mnist, 2d-swiss-roll; the "
            "default cpu-digits is used instead.") in warnings(at)  # fmt: skip


@pytest.mark.parametrize("written", [SWISS_ROLL, "2D: swiss roll"])
def test_a_teacher_presets_the_recipe_by_its_slug_or_its_title(root, classroom, written):
    hand_made_run(root, "only", [1.0])
    classroom(f'[defaults.train]\nrecipe = "{written}"\n')
    at = open_page("train.py")
    assert not at.warning, warnings(at)
    assert at.selectbox(key="recipe").value == SWISS_ROLL
    assert (at.selectbox(key="dataset").value, at.number_input(key="T").value) == ("swiss_roll", 200)
    assert "recipe=" not in view_link(at) and "T=" not in view_link(at)  # the server's defaults: a short link
    classroom('[defaults.train]\nrecipe = "gpu-mnist-64"\n')
    at = open_page("train.py")
    assert at.selectbox(key="recipe").value == "cpu-digits"
    assert "[defaults.train] recipe = 'gpu-mnist-64' is not one of cpu-digits, cpu-mnist, " in warnings(at)


def test_bad_link_values_fall_back_with_a_notice(root):
    at = open_page("sample.py", checkpoint="nope", sampler="GAN", n="lots", seed="-4")
    assert at.selectbox(key="checkpoint").value == MNIST and at.radio(key="sampler").value == "ddim"
    assert (at.number_input(key="n").value, at.number_input(key="seed").value) == (64, 0)
    for key in ("checkpoint=nope", "sampler=GAN", "n=lots", "seed=-4"):
        assert f"The link's {key} is not" in warnings(at)
    hand_made_run(root, "only", [1.0])
    at = open_page("train.py", steps="abc", dataset="imagenet", run="gone", smoothing="2")
    assert (at.number_input(key="steps").value, at.selectbox(key="dataset").value) == (1500, "digits")
    assert (at.selectbox(key="run").value, at.slider(key="smoothing").value) == ("only", 0.8)
    for key in ("steps=abc", "dataset=imagenet", "run=gone", "smoothing=2"):
        assert f"The link's {key} is not" in warnings(at)


def test_multiselects_and_texts_are_in_the_link_too(root):
    hand_made_run(root, "first", [1.0, 0.5])
    hand_made_run(root, "second", [0.8, 0.4])
    at = open_page("sample.py", compare_settings=["DDIM-100", "DDIM-10"])
    assert at.multiselect(key="compare_settings").value == ["DDIM-100", "DDIM-10"] and not at.warning
    at.multiselect(key="compare_settings").set_value(["DDIM-20"])
    rerun(at)  # one parameter per chosen option
    assert ("compare_settings", "DDIM-20") in parse_qsl(urlsplit(view_link(at)).query)
    at.multiselect(key="compare_settings").set_value([])
    rerun(at)  # none chosen is written ?compare_settings= (a bare key would mean "the default")
    assert open_page("sample.py", **dict(parse_qsl(urlsplit(view_link(at)).query, keep_blank_values=True))).multiselect(
        key="compare_settings").value == []  # fmt: skip
    at = open_page("train.py", dataset="folder", folder="my-images", classes="3,5", compare=["first", "second"])
    assert not at.warning, warnings(at)
    assert (at.text_input(key="folder").value, at.text_input(key="classes").value) == ("my-images", "3,5")
    assert at.multiselect(key="compare").value == ["first", "second"]
    query = parse_qsl(urlsplit(view_link(at)).query)
    assert {("folder", "my-images"), ("classes", "3,5"), ("compare", "first"), ("compare", "second")} <= set(query)


def test_a_links_unknown_options_are_dropped_with_a_notice(root):
    at = open_page("sample.py", compare_settings=["DDIM-100", "GAN-3"])
    assert at.multiselect(key="compare_settings").value == ["DDIM-100"]
    assert "The link's compare_settings=GAN-3 is not among DDPM-1000, DDIM-250, DDIM-100" in warnings(at)
    assert "ignored, the others are kept" in warnings(at)


def test_a_teacher_can_fix_a_multiselect(root, classroom):
    classroom('[defaults.sample]\ncheckpoint = "digits_cond"\n\n[locked.sample]\nguidance_scales = [1, 4]\n')
    at = open_page("sample.py", guidance_scales="0")
    scales = at.multiselect(key="guidance_scales")
    assert (scales.value, scales.disabled) == ([1.0, 4.0], True)
    assert "The link's guidance_scales=0 was ignored: the teacher has fixed guidance_scales to 1, 4." in warnings(at)
    classroom('[defaults.sample]\ncheckpoint = "digits_cond"\nguidance_scales = [1, 3]\n')
    at = open_page("sample.py")
    assert "[defaults.sample] guidance_scales = [1, 3] is not among 0, 1, 2, 4, 7; ignored." in warnings(at)
    assert at.multiselect(key="guidance_scales").value == [0.0, 1.0, 2.0, 4.0, 7.0]


# ----------------------------------------------------------------------------------------------------------------
# Training as a shared resource


def test_the_training_switch_hides_launching_and_the_registry_refuses_it(root, classroom):
    classroom("[training]\nenabled = false\n")
    stopped = hand_made_run(root, "stopped-run", [1.0, 0.5], state="stopped")
    for name in (runs.MODEL, runs.STATE):  # a checkpoint: resume would be offered with training on
        (stopped / name).write_bytes(b"")
    at = open_page("train.py")
    assert OFF in texts(at, "info")
    assert not find(at, "button", "launch") and not find(at, "button", "resume") and not find(at, "selectbox", "recipe")
    assert set(at.dataframe[0].value["name"]) == {"stopped-run"}  # the runs stay in view
    assert any(m.startswith("**stopped-run** — stopped") for m in texts(at, "markdown"))
    # a request that reaches the launch code anyway — the page's handler, or the registry itself — is refused
    config = TrainConfig(**{**BRIEF, "device": "cpu"})
    assert tq.launch(config, root / "crafted", Requester("x")) is False
    for call in (lambda: tq.registry().submit(config, root / "crafted", who=Requester("x")),
                 lambda: tq.registry().launch(config, root / "crafted"),
                 lambda: tq.registry().resume(stopped, 100)):  # fmt: skip
        with pytest.raises(LaunchError, match="Training is turned off"):
            call()
    assert not (root / "crafted").exists() and rh.read_status(stopped)["state"] == "stopped"


def test_with_room_for_one_runs_queue_and_start_first_come_first_served(root, classroom):
    classroom("[training]\nmax_concurrent = 1\n")
    alice, bob, carol = open_page("train.py"), open_page("train.py"), open_page("train.py")  # three sessions
    launch(alice, "first", **LONG)
    assert texts(alice, "success")[0].startswith("Launched first")
    launch(bob, "second")
    assert texts(bob, "info")[0] == "Queued second: 1st in the queue. It starts by itself when a slot frees up."
    assert any(i.startswith("Waiting: 1st in the queue — 1 of 1 slot(s) in use") for i in texts(bob, "info"))
    assert bob.button(key="cancel_run")  # its owner may cancel it
    launch(carol, "third")
    assert texts(carol, "info")[0].startswith("Queued third: 2nd in the queue")
    assert any("1 run(s) training now (first)" in w and "behind the 2 already waiting" in w for w in
               texts(rerun(alice), "warning"))  # fmt: skip
    alice.selectbox(key="run").set_value("second")
    rerun(alice)  # another session's queued run: its place, but no Cancel
    assert any(i.startswith("Waiting: 1st in the queue") for i in texts(alice, "info"))
    assert not find(alice, "button", "cancel_run") and "belongs to another browser" in " ".join(texts(alice, "caption"))

    tq.registry().stop(root / "first")  # the first ends: the queue moves on by itself, one run at a time
    assert tq.registry().drain(root, timeout=180)

    def both_done(at):
        return [rh.run_state(rh.read_status(root / n)) for n in ("second", "third")] == ["done", "done"]

    rerun_until(carol, both_done, "the queued runs")
    second, third = rh.read_status(root / "second"), rh.read_status(root / "third")
    assert rh.read_status(root / "first")["state"] == "stopped"
    assert third["started"] > second["updated"] >= second["started"] > second["queued"]  # in turn, after waiting
    rerun(carol)
    assert table_states(carol) == {"first": "stopped", "second": "done", "third": "done"}


def table_states(at: AppTest) -> dict[str, str]:
    return dict(zip(at.dataframe[0].value["name"], at.dataframe[0].value["status"], strict=True))


def test_each_browser_session_may_have_one_run_training_or_waiting(root, classroom):
    classroom("[training]\nmax_concurrent = 1\nper_session = 1\n")
    busy = root / "from-the-cli"
    busy.mkdir()
    runs.write_status(busy, "running", pid=os.getpid(), step=3, total_steps=10)  # a live process holds the slot
    alice, bob = open_page("train.py"), open_page("train.py")
    launch(alice, "one")
    assert texts(alice, "info")[0].startswith("Queued one: 1st in the queue")
    launch(alice, "two")
    assert "This browser already has 1 run(s) training or waiting (one)" in texts(alice, "error")[0]
    assert not (root / "two").exists()
    launch(bob, "two")  # another session has its own allowance
    assert texts(bob, "info")[0].startswith("Queued two: 2nd in the queue")
    alice.button(key="cancel_run").click()
    rerun(alice)  # cancelling frees the session's allowance
    assert not (root / "one").exists() and tq.registry().queue(root) == [(root / "two").resolve()]
    launch(alice, "three")
    assert texts(alice, "info")[0].startswith("Queued three: 2nd in the queue")


# ----------------------------------------------------------------------------------------------------------------
# Sampling: the teacher's locks and caps, and cancelling


def test_a_locked_sample_setting_is_greyed_out_and_no_link_changes_it(root, classroom):
    classroom("[locked.sample]\nn = 16\n\n[defaults.sample]\nseed = 5\n")
    at = open_page("sample.py", n="100")
    assert at.number_input(key="n").disabled and at.number_input(key="n").value == 16
    assert at.number_input(key="seed").value == 5 and not at.number_input(key="seed").disabled
    assert "The link's n=100 was ignored: the teacher has fixed n to 16." in warnings(at)
    at.selectbox(key="checkpoint").set_value(MOONS)
    rerun(at)  # a checkpoint of another kind resets N to its default, except where the teacher fixed it
    assert at.number_input(key="n").value == 16 and "n" not in link_query(view_link(at))


def test_sampling_requests_keep_to_the_classrooms_caps(root, classroom):
    classroom("[sampling]\nmax_n = 10\nmax_steps = 100\n")
    at = open_page("sample.py", n="500", sampler="DDPM")
    n = at.number_input(key="n")
    assert (n.max, n.value, n.label) == (10, 10, "N samples (≤ 10)")
    assert "The link's n=500 is not an integer in [1, 10]" in warnings(at)
    assert "DDPM takes all T = 1,000 steps, more than this server allows per request (100): pick DDIM" in warnings(at)
    assert at.button(key="generate").disabled
    assert "DDPM-1000" not in at.multiselect(key="compare_settings").options
    at.radio(key="sampler").set_value("ddim")
    rerun(at)
    assert at.number_input(key="steps").max == 100 and not at.button(key="generate").disabled
    at.selectbox(key="checkpoint").set_value(MOONS)
    rerun(at)  # 2D points are cheaper: 8× as many
    assert at.number_input(key="n").max == 80


def test_a_cancelled_sampling_keeps_no_result(root):
    at = open_page("sample.py", sampler="DDIM", steps="5", n="4")
    at.button(key="generate").click()
    assert rerun(at).session_state["sample.result"].request.n == 4  # an earlier result
    at.radio(key="sampler").set_value("ddpm")
    at.number_input(key="n").set_value(256)  # all 1,000 DDPM steps for 256 digits: many seconds on a CPU
    at.button(key="generate").click()
    with pytest.raises(RuntimeError, match="timed out"):
        at.run(timeout=1)  # AppTest stops the script at its next Streamlit call, as a click on Cancel reruns it
    at.button(key="generate").set_value(False)  # the next run is not another click on Generate
    rerun(at)
    assert "Sampling cancelled: nothing was kept." in warnings(at)
    assert "sample.result" not in at.session_state and any("Press **Generate**" in i for i in texts(at, "info"))
    rerun(at)
    assert "Sampling cancelled" not in warnings(at)  # said once
