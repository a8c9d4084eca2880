"""The Train page through AppTest: real tiny runs launched, watched, stopped and resumed from the page; bad settings,
bad names, a full house, failed and broken run folders shown as messages; widgets found by key."""

import contextlib
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from ddpm_core import run_history as rh
from ddpm_core import runs
from ddpm_core.config import TrainConfig
from ddpm_core.images import datasets_on_disk
from ddpm_core.recipes import DEFAULT_RECIPE, RECIPES
from explorer.jobs import MAX_RUNS_ENV
from explorer.train_widgets import registry
from tests.apptest_helpers import open_page, rerun

TINY_FORM = {"steps": 30, "batch_size": 32, "base_channels": 8, "T": 100, "preview_steps": 5, "log_every": 5,
             "preview_every": 15, "checkpoint_every": 15, "warmup": 5, "evaluate_n": 50}  # fmt: skip


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer inherits it: one thread on a shared CPU
    monkeypatch.setenv(MAX_RUNS_ENV, "1")
    yield tmp_path
    reg = registry()  # the app's one registry (st.cache_resource lives as long as this process)
    for path in reg.active(tmp_path):  # a test that failed half-way leaves no trainer behind
        if (job := reg.job(path)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()
    for path in reg.queue(tmp_path):  # nor a queued run that a later poll could start
        reg.cancel(path)


@pytest.fixture
def at(root) -> AppTest:
    return open_page("train.py")


def fill(at: AppTest, **settings) -> AppTest:
    """Set form widgets by key (= TrainConfig field name): number inputs, or selectboxes for text values."""
    for key, value in settings.items():
        widget = at.selectbox(key=key) if isinstance(value, str) else at.number_input(key=key)
        widget.set_value(value)
    return rerun(at)


def launch(at: AppTest, name: str, expect_success: bool = True, **settings) -> AppTest:
    fill(at, device="cpu", **{**TINY_FORM, **settings})
    at.text_input(key="name").set_value(name)
    rerun(at)
    at.button(key="launch").click()
    rerun(at)
    assert bool(at.success) == expect_success, [e.value for e in at.error]
    return at


def rerun_until(at: AppTest, predicate, what: str, timeout: float = 120) -> AppTest:
    """Rerun the page (each run reads the run folder afresh) until predicate(at) holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate(rerun(at)):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
    return at


def charts(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return {spec["layout"]["title"]["text"]: spec for spec in specs}


def progress_text(at: AppTest) -> str:
    bars = at.get("progress")
    return bars[0].proto.text if bars else ""


def image_captions(at: AppTest) -> list[str]:
    return [caption for el in at.get("image") for caption in el.captions]


def training_now(at: AppTest) -> bool:
    """The page's warning that the limit of concurrent runs is reached (1 here): a process is still alive."""
    return any("training now" in w.value for w in at.warning)


def log_tail(at: AppTest) -> str:
    """The tail of train.log the page shows (the other code block is the "Copy link to this view" popover's)."""
    (tail,) = [c.value for c in at.code if not c.value.startswith("http")]
    return tail


def has(at: AppTest, kind: str, key: str) -> bool:
    return any(w.key == key for w in at.get(kind))


def table(at: AppTest):
    return at.dataframe[0].value


def state(run) -> str:
    return rh.run_state(rh.read_status(run))


def hand_made_run(root, name, losses, state="done", **status):
    """A finished run written with the trainer's own helpers, with an EMA preview grid."""
    run = root / name
    (run / runs.PREVIEWS).mkdir(parents=True)
    runs.write_text(run / runs.CONFIG, TrainConfig(dataset="moons", steps=10 * len(losses)).to_json())
    for i, loss in enumerate(losses, start=1):
        runs.append_metrics(run, {"step": 10 * i, "loss": loss, "loss_buckets": [loss] * 10, "images_per_s": 100.0,
                                  "elapsed": float(i), "time": 1000.0 + i})  # fmt: skip
    runs.write_status(run, state, pid=1, step=10 * len(losses), total_steps=10 * len(losses), **status)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(run / runs.PREVIEWS / "step_000020_ema.png")
    return run


def test_page_renders_the_objective_the_form_and_the_device(at):
    assert at.title[0].value == "Train"
    latex = " ".join(e.value for e in at.latex)
    assert r"\epsilon_\theta" in latex and r"\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon" in latex
    assert at.selectbox(key="recipe").value == DEFAULT_RECIPE
    assert at.selectbox(key="recipe").options == [r.title for r in RECIPES.values()]  # slugs, shown by their titles
    assert at.number_input(key="steps").value == 1500 and at.selectbox(key="dataset").value == "digits"
    assert any(c.value.startswith("Found: ") for c in at.caption)
    assert at.info[0].value.startswith("No runs in")
    at.selectbox(key="recipe").set_value("2d-swiss-roll")
    rerun(at)
    assert (at.selectbox(key="dataset").value, at.number_input(key="batch_size").value) == ("swiss_roll", 256)
    assert (at.number_input(key="T").value, at.number_input(key="preview_n").value) == (200, 1000)
    assert at.selectbox(key="model").options[1:] == ["mlp"]  # no UNet preset for points
    at.selectbox(key="recipe").set_value("gpu-mnist")
    rerun(at)  # no MNIST under the repository's data/: the recipe says so, and launching is off
    assert any("needs MNIST on disk" in w.value for w in at.warning)
    assert any("a CUDA GPU" in w.value for w in at.warning) != torch.cuda.is_available()
    assert at.button(key="launch").disabled and "not on disk" in at.info[0].value


def form_value(at: AppTest, key: str):
    """A form widget's value by key (= TrainConfig field name): a selectbox, a radio, a number or a checkbox."""
    kinds = ("selectbox", "radio", "number_input", "checkbox", "toggle")
    found = [w for kind in kinds for w in at.get(kind) if w.key == key]
    return found[0].value


def test_the_cpu_mnist_recipe_fills_the_form_and_says_how_to_get_mnist(at, root, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_DATA", str(root / "data"))  # a data root without MNIST
    at.selectbox(key="recipe").set_value("cpu-mnist")
    rerun(at)
    overlay = RECIPES["cpu-mnist"].overlay
    assert {key: form_value(at, key) for key in overlay} == overlay
    how_to_get = {d.name: d for d in datasets_on_disk(root / "data")}["mnist"].how_to_get()
    assert how_to_get in [i.value for i in at.info] and "--download" in how_to_get
    warning = " ".join(w.value for w in at.warning)
    assert "needs MNIST on disk" in warning and "GPU" not in warning and at.button(key="launch").disabled
    at.selectbox(key="recipe").set_value("cpu-digits")
    rerun(at)  # a setting only cpu-mnist's overlay names goes back to the fresh view's value
    assert form_value(at, "evaluate_n") == TrainConfig().evaluate_n and form_value(at, "dataset") == "digits"
    assert not at.warning and not at.button(key="launch").disabled


def test_a_run_launched_from_the_page_is_watched_until_done(at, root):
    launch(at, "tiny run")
    assert at.success[0].value.startswith("Launched tiny-run")
    run = root / "tiny-run"
    assert run.is_dir() and runs.read_json(run / runs.CONFIG)["steps"] == 30
    assert any(i.value.startswith("Starting: the trainer is loading torch") for i in at.info)  # no status.json yet

    def done(at):
        return (
            state(run) == "done"
            and not training_now(at)
            and any(m.value.startswith("**tiny-run** — done") for m in at.markdown)
        )

    rerun_until(at, done, "finished run")
    records = rh.read_records(run)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    loss = charts(at)["Training loss"]["data"]
    assert loss[0]["y"] == pytest.approx([r["loss"] for r in records])  # raw, then smoothed
    assert loss[1]["y"] == pytest.approx(rh.ema_smooth([r["loss"] for r in records], 0.8))
    buckets = charts(at)["Loss per range of t (the last log intervals)"]["data"][0]
    assert buckets["x"][0] == "1–10" and len(buckets["y"]) == 10
    assert image_captions(at) == ["tiny-run: raw weights, step 30", "tiny-run: EMA weights, step 30"]
    row = table(at).iloc[0]
    assert (row["name"], row["dataset"], row["steps"], row["status"]) == ("tiny-run", "digits", "30 / 30", "done")
    assert row["final loss"] == pytest.approx(records[-1]["loss"])
    report = runs.read_json(run / runs.EVALUATION)  # TINY_FORM asks for 50 samples: the metric column is filled
    assert (report["n"], report["step"]) == (50, 30) and row["metric"] == f"pixel FD {report['pixel_fd']:.3g}"
    assert any(s.value.startswith(f"Quality of the final EMA weights: {row['metric']} (50 DDIM-50") for s in at.success)
    bound = report["bound"]  # the digits' bound is cheap: measured on the same 50, shown in its column and the panel
    assert bound["n"] == 50 and row["bound"] == f"{bound['bits_per_dim']:.3g} ± {bound['stderr']:.2g} bits/dim"
    assert any(f"Variational bound: {row['bound']} (σ_t² = β_t" in s.value for s in at.success)
    at.text_input(key="name").set_value("tiny run")
    rerun(at).button(key="launch").click()
    assert "already holds a trained model" in rerun(at).error[0].value


def test_stop_and_resume_from_the_page(at, root):
    launch(at, "long", steps=100_000, preview_every=0, checkpoint_every=0)
    run = root / "long"
    rerun_until(at, lambda at: has(at, "button", "stop") and "Training loss" in charts(at), "live loss chart")
    assert re.fullmatch(r"step [\d,]+ / 100,000 · ETA .+ · [\d,]+ images/s", progress_text(at))
    assert any("1 run(s) training now (long)" in w.value for w in at.warning)  # the limit is 1
    at.button(key="stop").click()
    assert any(i.value.startswith("Stop requested") for i in rerun(at).info)
    rerun_until(at, lambda at: has(at, "number_input", "resume_steps"), "clean stop")  # once its process has exited
    assert state(run) == "stopped"
    step = rh.read_status(run)["step"]
    assert (run / runs.MODEL).is_file()
    at.number_input(key="resume_steps").set_value(step + 10)
    rerun(at).button(key="resume").click()
    assert not rerun(at).error, [e.value for e in at.error]
    rerun_until(at, lambda at: state(run) == "done" and not training_now(at), "resumed run")
    assert rh.read_status(run)["step"] == step + 10


def test_the_live_panel_says_when_the_trainer_left_a_core_to_the_app(at, root):
    run = hand_made_run(root, "shared", [1.0, 0.9], state="running", device="cpu")
    runs.write_status(run, "running", pid=os.getpid(), step=40, total_steps=1000)  # alive: this process
    for step, threads in ((30, 2), (40, 1)):  # as the trainer logs them (ddpm_core.sharing)
        runs.append_metrics(run, {"step": step, "loss": 0.8, "images_per_s": 1500.0, "elapsed": float(step),
                                  "time": time.time() - 40 + step, "cpu_threads": threads})  # fmt: skip
    assert rerun(at).selectbox(key="run").value == "shared"
    assert progress_text(at).endswith("· 1,500 images/s (1 of 2 CPU threads: a core is busy elsewhere)")
    runs.append_metrics(run, {"step": 50, "loss": 0.7, "images_per_s": 2900.0, "elapsed": 50.0,
                              "time": time.time(), "cpu_threads": 2})  # fmt: skip
    assert progress_text(rerun(at)).endswith("· 2,900 images/s")  # every thread again


def test_a_stopped_run_says_its_evaluation_was_skipped(at, root):
    hand_made_run(root, "halted", [1.0, 0.9], state="stopped", evaluation="skipped: the run was stopped")
    assert rerun(at).selectbox(key="run").value == "halted"
    (skipped,) = [i.value for i in at.info if i.value.startswith("No quality metric")]
    assert "its evaluation was skipped: the run was stopped" in skipped and "python -m ddpm_core.evaluate" in skipped


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("batch_size", 0, "batch_size must be positive"), ("lr", -1.0, "lr must be positive"),
     ("steps", 0, "steps must be positive")],
)  # fmt: skip
def test_bad_settings_show_an_error_and_launch_is_off(at, key, value, message):
    fill(at, **{key: value})
    assert len(at.error) == 1
    assert at.error[0].value.startswith("These settings cannot train: ") and message in at.error[0].value
    assert at.button(key="launch").disabled


def test_run_names_are_sanitised_or_refused(at, root):
    at.text_input(key="name").set_value("../my run!")
    rerun(at)
    assert any(c.value.startswith(f"Saved in `{root / 'my-run'}`") for c in at.caption)
    at.text_input(key="name").set_value("///")
    rerun(at)
    assert "no letters or digits" in at.error[0].value and at.button(key="launch").disabled


def test_history_lists_runs_and_compares_two(at, root):
    hand_made_run(root, "first", [1.0, 0.5, 0.25])
    hand_made_run(root, "second", [0.8, 0.4])
    runs.write_json(root / "second" / rh.EVALUATION, {"mmd": 0.002, "sliced_wasserstein": 0.05})
    rerun(at)
    rows = table(at).set_index("name")
    assert set(rows.index) == {"first", "second"}
    assert rows.loc["first", "final loss"] == 0.25 and rows.loc["second", "metric"] == "sliced W1 0.05"
    at.multiselect(key="compare").set_value(["first", "second"])
    rerun(at)
    compared = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"]  # after the watched run's charts
    assert [t["name"] for t in compared] == ["first (raw)", "first (smoothed)", "second (raw)", "second (smoothed)"]
    assert compared[0]["y"] == [1.0, 0.5, 0.25] and compared[2]["y"] == [0.8, 0.4]
    assert image_captions(at)[-2:] == ["first: EMA weights, step 20", "second: EMA weights, step 20"]


def test_a_full_house_queues_a_launch_with_a_clear_message(at, root):
    busy = root / "from-the-cli"
    busy.mkdir()
    runs.write_status(busy, "running", pid=os.getpid(), step=3, total_steps=10)  # a live process
    rerun(at)
    assert any("1 run(s) training now (from-the-cli)" in w.value for w in at.warning)
    launch(at, "waiting", expect_success=False)
    assert not at.error and any(i.value.startswith("Queued waiting: 1st in the queue") for i in at.info)
    assert state(root / "waiting") == "queued" and registry().queue(root) == [(root / "waiting").resolve()]
    assert any(i.value.startswith("Waiting: 1st in the queue — 1 of 1 slot(s) in use") for i in at.info)
    at.button(key="cancel_run").click()  # its owner takes it out of the queue: the folder goes
    rerun(at)
    assert not (root / "waiting").exists() and registry().queue(root) == []


def test_the_image_folder_must_lie_inside_the_servers_data_root(at, root, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_DATA", str(root / "data"))
    at.selectbox(key="dataset").set_value("folder")
    rerun(at)
    assert {t.key for t in at.text_input} == {"folder", "classes", "name"}  # no free-text data root
    assert str(root / "data") in at.selectbox(key="dataset").help
    for text, message in (("../elsewhere", "leads out of the data root"), (str(root), "not as an absolute path"),
                          ("a/../../b", "leads out of the data root")):  # fmt: skip
        at.text_input(key="folder").set_value(text)
        rerun(at)
        assert message in at.error[0].value and at.button(key="launch").disabled
    at.text_input(key="folder").set_value("classes/../mine")
    rerun(at)  # inside it: no error of the page's (the trainer says whether it holds images)
    assert not at.error and not at.button(key="launch").disabled


def test_a_run_that_fails_to_start_shows_the_trainers_message(at, root, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_DATA", str(root))  # the server's data root: the form names folders inside it
    at.selectbox(key="dataset").set_value("folder")
    rerun(at).text_input(key="folder").set_value("no-such-folder")
    launch(at, "no-images")
    rerun_until(at, lambda at: at.error, "error message")
    assert at.error[0].value.startswith("no-images failed: ") and "no-such-folder" in at.error[0].value
    assert "(the trainer exited with code 2; see train.log)" in at.error[0].value
    assert "error: " in log_tail(at)
    assert table(at).set_index("name").loc["no-images", "status"] == "failed"


def test_failed_and_broken_runs_show_messages_not_exceptions(at, root):
    failed = hand_made_run(root, "nan-run", [1.0], state="failed", error="the loss became nan at step 10")
    (failed / rh.LOG).write_text("training\nerror: the loss became nan at step 10\n")
    broken = root / "broken"
    broken.mkdir()
    (broken / runs.STATUS).write_text("{garbage")
    (broken / runs.CONFIG).write_text("[]")
    (broken / runs.METRICS).write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    (broken / runs.PREVIEWS).mkdir()
    (broken / runs.PREVIEWS / "step_000001_ema.png").write_bytes(b"not a png")
    rerun(at)
    assert set(table(at)["status"]) == {"failed", "unknown"}
    at.selectbox(key="run").set_value("nan-run")
    rerun(at)
    assert at.error[0].value == "nan-run failed: the loss became nan at step 10"
    assert "error: the loss became nan" in log_tail(at)
    at.selectbox(key="run").set_value("broken")
    rerun(at)
    assert at.error[0].value.startswith("broken unknown: no status.json")
