"""Shareable views and the classroom file: links restore the Forward and Schedules pages exactly, bad or tampered
link values fall back with a notice, the teacher's defaults, locks and hidden pages apply, and a faulty classroom
file never stops the app. (The Train and Sample pages: tests/test_classroom_pages.py.)"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from explorer.classroom import MAX_N, ROOT, config_path, load_classroom
from tests.apptest_helpers import rerun

EXAMPLE = """
[server]
data_root = "/srv/data"

[training]
enabled = false
max_concurrent = 2
per_session = 3

[sampling]
max_n = 64
max_steps = 200

[pages]
hidden = ["train"]

[defaults.forward]
schedule = "cosine"
t = 100

[locked.schedules]
"s0.T" = 500
"""


def open_with(file: str, query: dict[str, str]) -> AppTest:
    """pages/<file> opened from a link carrying query: the app's first run is the home page, then the page."""
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    rerun(at)
    at.switch_page(str(ROOT / "pages" / file))
    for key, value in query.items():
        at.query_params[key] = value
    return rerun(at)


def link(at: AppTest) -> str:
    return next(c.value for c in at.code if c.value.startswith("http"))


def notices(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


@pytest.fixture
def classroom_file(tmp_path, monkeypatch):
    """Writes a classroom file and points the app at it."""

    def write(text: str) -> Path:
        path = tmp_path / "classroom.toml"
        path.write_text(text)
        monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(path))
        return path

    return write


# ----------------------------------------------------------------------------------------------------------------
# The classroom file


def test_every_setting_of_the_example_file_is_read():
    room = load_classroom(None, {}).__class__  # the defaults first
    defaults = room()
    assert defaults.training and defaults.max_n == MAX_N and defaults.hidden_pages == () and not defaults.problems
    path = Path(__file__).parent / "_example_classroom.toml"
    try:
        path.write_text(EXAMPLE)
        r = load_classroom(path, {})
    finally:
        path.unlink()
    assert (r.training, r.max_concurrent, r.per_session, r.max_n, r.max_steps) == (False, 2, 3, 64, 200)
    assert r.data_root == Path("/srv/data") and r.hidden_pages == ("train",) and not r.problems
    assert r.default("forward", "t") == 100 and not r.is_locked("forward", "t")
    assert r.default("schedules", "s0.T") == 500 and r.is_locked("schedules", "s0.T")
    assert r.default("sample", "t") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[training]\nenabled = 'no'", "[training] enabled must be true or false, got 'no'"),
        ("[training]\nmax_concurrent = 0", "[training] max_concurrent must be a whole number ≥ 1, got 0"),
        ("[sampling]\nmax_n = 2.5", "[sampling] max_n must be a whole number ≥ 1, got 2.5"),
        ("[pages]\nhidden = ['home']", "cannot hide the home page"),
        ("[pages]\nhidden = ['nowhere']", "must be a list of page names from home, forward"),
        ("[training]\ncolour = 1", "[training] colour is not a setting"),
        ("[gpu]\nfast = true", "[gpu] is not a section of the classroom file"),
        ("[defaults.nowhere]\nt = 1", "[defaults.nowhere] is not a page"),
        ("[locked.forward]\nt = {at = 1}", "[locked.forward] t must be a number, a string, true/false or a list"),
        ("[defaults.sample]\nscales = [1, [2]]", "[defaults.sample] scales must be a number, a string, true/false"),
        ("this is = = not toml", "is not valid TOML"),
    ],
)
def test_a_faulty_classroom_file_is_reported_and_the_rest_still_applies(tmp_path, text, problem):
    path = tmp_path / "classroom.toml"
    path.write_text(text + "\n[sampling]\nmax_steps = 77\n" if "[sampling]" not in text else text)
    room = load_classroom(path, {})
    assert len(room.problems) == 1 and problem in room.problems[0]
    assert room.training and room.hidden_pages == ()  # the defaults stand where the file was wrong
    if "[sampling]" not in text and "not valid TOML" not in problem:
        assert room.max_steps == 77  # and the right entries still count


def test_the_readme_example_is_a_faultless_classroom_file(tmp_path):
    readme = (ROOT / "README.md").read_text()
    path = tmp_path / "classroom.toml"
    path.write_text(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    room = load_classroom(path, {})
    assert not room.problems and room.hidden_pages == ("train",) and room.is_locked("schedules", "s0.T")
    assert (room.max_n, room.max_steps, room.default("forward", "t")) == (64, 250, 250)
    assert room.default("sample", "guidance_scales") == [0, 1, 4]  # a multiselect's list


def test_the_environment_wins_and_a_missing_file_is_a_problem_not_a_crash(tmp_path):
    env = {"DDPM_EXPLORER_TRAINING": "off", "DDPM_EXPLORER_MAX_RUNS": "3", "DDPM_EXPLORER_DATA": str(tmp_path)}
    room = load_classroom(tmp_path / "missing.toml", env)
    assert not room.training and room.max_concurrent == 3 and room.data_root == tmp_path
    assert "cannot read the classroom file" in room.problems[0]
    assert load_classroom(None, {"DDPM_EXPLORER_DATA": "mydata"}).data_root == ROOT / "mydata"


def test_the_config_path_comes_from_the_script_arguments_or_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_CONFIG", "/env.toml")
    assert config_path(["--config", "/arg.toml"]) == "/arg.toml"
    assert config_path(["--config=/eq.toml"]) == "/eq.toml"
    assert config_path([]) == "/env.toml"


# ----------------------------------------------------------------------------------------------------------------
# Links: round trips


FORWARD_VIEW = {"t": "500", "schedule": "cosine", "seed": "7", "cosine.s": "0.01", "n_compare": "3"}


def test_a_forward_link_restores_the_view_and_the_copy_link_is_that_link():
    at = open_with("forward.py", FORWARD_VIEW)
    assert at.slider(key="t").value == 500 and at.number_input(key="t_number").value == 500
    assert at.selectbox(key="schedule").value == "cosine" and at.number_input(key="seed").value == 7
    assert at.number_input(key="cosine.s").value == 0.01 and at.slider(key="n_compare").value == 3
    assert at.image[0].captions[0].startswith("x_t at t = 500") and not at.warning
    shared = urlsplit(link(at))
    assert shared.path == "/forward" and dict(parse_qsl(shared.query)) == FORWARD_VIEW
    again = open_with("forward.py", dict(parse_qsl(shared.query)))  # whoever opens the copied link
    assert [i.proto.imgs[0].url for i in again.image][:1] == [i.proto.imgs[0].url for i in at.image][:1]


def test_the_copy_link_follows_the_widgets():
    at = open_with("forward.py", {})
    assert urlsplit(link(at)).query == ""  # every widget at its default: a bare link
    at.slider(key="t").set_value(42)
    at.selectbox(key="source").set_value("photo")
    rerun(at)
    query = dict(parse_qsl(urlsplit(link(at)).query))
    assert query == {"t": "42", "source": "Sample photo (scikit-learn)"}
    assert open_with("forward.py", query).selectbox(key="photo").value == "china"


def test_a_schedules_link_restores_four_schedules_and_the_axes():
    view = {"n_schedules": "3", "s2.schedule": "sigmoid", "s2.sigmoid.tau": "0.5", "s0.linear.beta_end": "0.03",
            "log_y": "true", "x_axis": "t/T", "s1.rescale_zero_terminal_snr": "true"}  # fmt: skip
    at = open_with("schedules.py", view)
    assert at.number_input(key="n_schedules").value == 3 and at.toggle(key="log_y").value
    assert at.selectbox(key="s2.schedule").value == "sigmoid" and at.number_input(key="s2.sigmoid.tau").value == 0.5
    assert at.number_input(key="s0.linear.beta_end").value == 0.03 and at.radio(key="x_axis").value == "t/T"
    assert at.checkbox(key="s1.rescale_zero_terminal_snr").value
    assert dict(parse_qsl(urlsplit(link(at)).query)) == view


@pytest.mark.parametrize(
    ("query", "fallback"),
    [
        ({"t": "abc"}, {"t": 250}),
        ({"t": "5000"}, {"t": 250}),
        ({"t": "0x10"}, {"t": 250}),
        ({"seed": "-5"}, {"seed": 0}),
        ({"schedule": "nope"}, {"schedule": "linear"}),
        ({"schedule": "scaled_linear"}, {"schedule": "linear"}),  # links carry the label, "scaled linear"
        ({"linear.beta_end": "nan"}, {"linear.beta_end": 0.02}),
        ({"linear.beta_end": "inf"}, {"linear.beta_end": 0.02}),
        ({"mode": "<script>alert(1)</script>"}, {"mode": "image"}),
    ],
)
def test_bad_link_values_fall_back_to_the_default_with_a_notice(query, fallback):
    at = open_with("forward.py", query)
    (key, raw), (_, expected) = next(iter(query.items())), next(iter(fallback.items()))
    widgets = {w.key: w for w in [*at.slider, *at.number_input, *at.selectbox, *at.radio]}
    assert widgets[key].value == expected
    assert f"The link's {key}={raw} is not" in notices(at) and "is used instead" in notices(at)


def test_a_fractional_integer_in_a_link_is_truncated_as_streamlit_does_and_said_so():
    at = open_with("forward.py", {"t": "2.7"})
    assert at.slider(key="t").value == 2 and "The link's t=2.7 is not an integer; 2 is used." in notices(at)


def test_a_bad_schedule_from_a_link_shows_the_pickers_error_not_an_exception():
    at = open_with("schedules.py", {"s0.linear.beta_end": "0.5", "s0.linear.beta_start": "0.9"})
    assert any("β_start" in e.value or "beta" in e.value for e in at.error)  # the picker names the bad value


# ----------------------------------------------------------------------------------------------------------------
# The teacher's defaults, locks and hidden pages


def test_teacher_defaults_apply_and_a_link_still_wins(classroom_file):
    classroom_file('[defaults.forward]\nschedule = "cosine"\nt = 100\nsource = "Sample photo (scikit-learn)"\n')
    at = open_with("forward.py", {})
    assert at.selectbox(key="schedule").value == "cosine" and at.slider(key="t").value == 100
    assert at.selectbox(key="source").value == "photo"  # a value may also be written as its label, as links do
    assert urlsplit(link(at)).query == ""  # the teacher's defaults are this server's defaults
    linked = open_with("forward.py", {"t": "300", "schedule": "linear"})
    assert linked.slider(key="t").value == 300 and linked.selectbox(key="schedule").value == "linear"


def test_a_teacher_may_open_the_forward_page_on_the_8x8_digits_or_on_one_class_of_mnist(classroom_file):
    classroom_file('[defaults.forward]\nsource = "digits"\ndigit_index = 7\n')
    at = open_with("forward.py", {})
    assert at.selectbox(key="source").value == "digits" and at.number_input(key="digit_index").value == 7
    assert "1×8×8" in at.image[0].captions[0] and not at.warning
    classroom_file('[defaults.forward]\nmnist_class = 7\n\n[locked.forward]\nsource = "mnist"\n')
    at = open_with("forward.py", {"source": "Digits (8×8, embedded)"})
    assert at.selectbox(key="source").disabled and at.selectbox(key="mnist_class").value == 7
    assert "1×28×28" in at.image[0].captions[0] and "teacher has fixed source" in notices(at)


def test_a_locked_value_is_greyed_out_and_no_link_changes_it(classroom_file):
    classroom_file('[locked.schedules]\n"s0.T" = 500\n"s0.schedule" = "cosine"\n')
    at = open_with("schedules.py", {"s0.T": "900"})
    T, family = at.number_input(key="s0.T"), at.selectbox(key="s0.schedule")
    assert (T.value, T.disabled, family.value, family.disabled) == (500, True, "cosine", True)
    assert "The link's s0.T=900 was ignored: the teacher has fixed s0.T to 500" in notices(at)
    assert not at.number_input(key="s1.T").disabled


def test_a_teacher_value_that_does_not_fit_its_widget_is_reported_on_the_page(classroom_file):
    classroom_file('[defaults.forward]\nt = "soon"\nschedule = "zigzag"\n')
    at = open_with("forward.py", {})
    assert at.slider(key="t").value == 250 and at.selectbox(key="schedule").value == "linear"
    assert "[defaults.forward] t = 'soon' is not an integer" in notices(at)
    assert "[defaults.forward] schedule = 'zigzag' is not one of" in notices(at)


def test_hidden_pages_leave_the_navigation_and_home_says_so(classroom_file):
    classroom_file('[pages]\nhidden = ["train", "sample"]\n[training]\nenabled = false\n')
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    rerun(at)
    text = " ".join(m.value for m in at.markdown)
    assert text.count("hidden on this server by its classroom settings") == 2
    assert "training from the UI **off**" in text
    with pytest.raises(ValueError, match=r"Known pages: .*home.py.*forward.py.*schedules.py.*edit.py.*bound.py'\]"):
        at.switch_page(str(ROOT / "pages" / "train.py"))  # not registered: no URL reaches it


def test_a_teacher_can_preselect_the_sample_pages_checkpoint_by_its_name(classroom_file, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path / "runs"))
    classroom_file('[defaults.sample]\ncheckpoint = "moons"\n')
    at = open_with("sample.py", {})
    assert at.selectbox(key="checkpoint").value.endswith("moons.safetensors") and not notices(at)
