"""A classroom file's lists keep their good entries: one unknown page in [pages] hidden, or one odd value in a
[defaults]/[locked] multiselect list, is reported and skipped, and the rest still applies (so Train stays hidden)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explorer.classroom import load_classroom
from tests.apptest_helpers import rerun
from tests.conftest import ROOT


def room_of(tmp_path, text: str):
    path = tmp_path / "classroom.toml"
    path.write_text(text)
    return load_classroom(path, {})


@pytest.mark.parametrize(
    ("hidden", "kept", "problem"),
    [
        ('["train", "trian"]', ("train",), "'trian' is not"),
        ('["home", "train"]', ("train",), "cannot hide the home page"),
        ('["sample", 3, "train"]', ("sample", "train"), "3 is not"),
        ('["nowhere", "elsewhere", "train"]', ("train",), "'nowhere', 'elsewhere' are not"),
        ('["trian"]', (), "'trian' is not"),
    ],
)
def test_one_bad_hidden_page_keeps_the_others_hidden(tmp_path, hidden, kept, problem):
    room = room_of(tmp_path, f"[pages]\nhidden = {hidden}\n")
    assert room.hidden_pages == kept
    assert len(room.problems) == 1 and problem in room.problems[0], room.problems
    assert room.problems[0].startswith("[pages] hidden ")
    assert "the other entries still apply" in room.problems[0]


def test_a_good_hidden_list_has_no_problem_and_repeats_count_once(tmp_path):
    room = room_of(tmp_path, '[pages]\nhidden = ["train", "sample", "train"]\n')
    assert room.hidden_pages == ("train", "sample") and not room.problems


def test_a_hidden_value_that_is_no_list_is_ignored_whole(tmp_path):
    room = room_of(tmp_path, '[pages]\nhidden = "train"\n')
    assert room.hidden_pages == () and "must be a list of page names" in room.problems[0]
    assert room.problems[0].endswith("; ignored")


@pytest.mark.parametrize("section", ["defaults", "locked"])
def test_a_multiselect_list_keeps_its_good_options(tmp_path, section):
    room = room_of(tmp_path, f"[{section}.sample]\nguidance_scales = [0, [1], 4, {{a = 2}}]\nt = 5\n")
    assert room.default("sample", "guidance_scales") == [0, 4]
    assert room.is_locked("sample", "guidance_scales") == (section == "locked")
    assert room.default("sample", "t") == 5  # the entries beside it are untouched
    (problem,) = room.problems
    assert f"[{section}.sample] guidance_scales must be a number" in problem
    assert "[1], {'a': 2} among them; the others still apply" in problem


def test_a_list_with_no_good_option_is_dropped_and_the_page_default_stands(tmp_path):
    room = room_of(tmp_path, "[defaults.sample]\nguidance_scales = [[1], [2]]\n")
    assert room.default("sample", "guidance_scales") is None
    assert "no entry left; ignored" in room.problems[0]


def test_a_table_where_a_value_belongs_names_the_value(tmp_path):
    room = room_of(tmp_path, "[locked.forward]\nt = {at = 1}\n")
    assert room.default("forward", "t") is None
    assert room.problems == ("[locked.forward] t must be a number, a string, true/false or a list of them, "
                             "got {'at': 1}; ignored",)  # fmt: skip


def test_the_app_still_hides_train_when_one_hidden_entry_is_a_typo(tmp_path, monkeypatch):
    path = tmp_path / "classroom.toml"
    path.write_text('[pages]\nhidden = ["train", "smaple"]\n')
    monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(path))
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    rerun(at)
    assert not at.exception
    assert any("'smaple' is not" in w.value for w in at.warning)  # Home lists the problem
    with pytest.raises(ValueError, match=r"Known pages: (?!.*train\.py)"):
        at.switch_page(str(ROOT / "pages" / "train.py"))  # Train is still not registered
