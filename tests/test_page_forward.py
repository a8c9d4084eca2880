"""The Forward process page through Streamlit's AppTest: widgets found by key, never by position."""

from __future__ import annotations

import base64
import io
import json
import struct
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ddpm_core.data import DatasetError
from explorer import forward_widgets as fw
from tests.apptest_helpers import open_page, rerun
from tests.test_links import link, notices, open_with


@pytest.fixture
def at() -> AppTest:
    return open_page("forward.py")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _images(at: AppTest) -> list[str]:
    return [url for image in at.image for url in image.value]


def _array(trace_values) -> np.ndarray:
    """A plotly trace's x or y as JSON: a list, or {"dtype", "bdata": base64} for typed arrays."""
    if isinstance(trace_values, dict):
        return np.frombuffer(base64.b64decode(trace_values["bdata"]), dtype=trace_values["dtype"])
    return np.asarray(trace_values, dtype=float)


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_the_page_renders_x_t_its_numbers_and_the_strip(at):
    assert at.title[0].value == "Forward process"
    assert at.slider(key="t").value == 250 and at.number_input(key="t_number").value == 250
    assert set(_metrics(at)) == {"ᾱ_t", "√ᾱ_t", "SNR_t", "log-SNR"}
    latex = " ".join(e.value for e in at.latex)
    assert r"\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon" in latex
    assert r"\sqrt{\alpha_t\alpha_{t-1}}\, x_{t-2}" in latex  # the two-step derivation
    assert any("index + 1" in c.value for c in at.caption)
    assert len(_images(at)) == 4  # x_t, the strip, the two compared schedules; the chain waits for its switch
    assert "std" not in " ".join(m.value for m in at.markdown)
    at.toggle(key="chain").set_value(True)
    rerun(at)
    assert len(_images(at)) == 6  # + one draw of the chain and one of the closed form
    assert "std" in " ".join(m.value for m in at.markdown)  # the chain-vs-closed table
    assert at.download_button(key="download_strip").label.startswith("Download")
    histogram = _charts(at)[0]
    assert histogram["layout"]["xaxis"]["range"] == [-4, 4] and len(histogram["data"]) == 2


def _mnist_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("MNIST test image"))


def test_the_page_opens_on_a_bundled_28x28_mnist_digit_and_picks_another_by_index_class_or_seed(at):
    assert at.selectbox(key="source").value == "mnist" and "1×28×28" in at.image[0].captions[0]
    assert _mnist_caption(at).startswith("MNIST test image #8,010, a 3")  # a clear one
    assert at.number_input(key="mnist_index").help == "among all 300 digits"
    first = _images(at)[0]
    at.number_input(key="mnist_index").set_value(4)
    rerun(at)
    assert _mnist_caption(at).startswith("MNIST test image #8,004, a 1") and _images(at)[0] != first
    at.selectbox(key="mnist_class").set_value(7)
    rerun(at)
    assert at.number_input(key="mnist_index").help == "among the 30 7s"
    assert _mnist_caption(at).endswith("a 7 (MNIST: LeCun, Cortes & Burges; CC BY-SA 3.0)")
    at.number_input(key="mnist_index").set_value(29)
    rerun(at)
    last_seven = _mnist_caption(at)
    at.selectbox(key="mnist_class").set_value(None)
    rerun(at)
    at.number_input(key="mnist_index").set_value(299)
    rerun(at)
    at.selectbox(key="mnist_class").set_value(2)
    rerun(at)
    assert at.number_input(key="mnist_index").value == 29 and ", a 2 " in _mnist_caption(at)  # kept in range
    assert last_seven != _mnist_caption(at) and not at.warning
    at.toggle(key="random_mnist").set_value(True)
    rerun(at)
    drawn = _mnist_caption(at)
    at.number_input(key="mnist_seed").set_value(1)
    rerun(at)
    assert ", a 2 " in drawn and ", a 2 " in _mnist_caption(at) and _mnist_caption(at) != drawn  # another 2
    assert "Digit **#" in " ".join(m.value for m in at.markdown)
    assert "1×28×28" in at.image[0].captions[0]


def test_a_link_names_the_source_and_the_mnist_digit():
    old = open_with("forward.py", {"source": "Digits (8×8, embedded)", "digit_index": "5"})
    assert old.selectbox(key="source").value == "digits" and "1×8×8" in old.image[0].captions[0]
    assert old.number_input(key="digit_index").value == 5 and not old.warning
    view = {"mnist_class": "3", "mnist_index": "2", "t": "100"}
    at = open_with("forward.py", view)
    assert ", a 3 " in _mnist_caption(at) and at.number_input(key="mnist_index").value == 2 and not at.warning
    assert dict(parse_qsl(urlsplit(link(at)).query)) == view
    bad = open_with("forward.py", {"mnist_class": "eleven"})
    assert "The link's mnist_class=eleven is not one of any, 0, 1" in notices(bad)
    assert bad.selectbox(key="mnist_class").value is None


def test_a_link_from_when_the_8x8_digits_were_the_default_still_opens_them():
    old = open_with("forward.py", {"digit_index": "5", "t": "100"})  # such links left the default source out
    assert old.selectbox(key="source").value == "digits" and "1×8×8" in old.image[0].captions[0]
    assert old.number_input(key="digit_index").value == 5 and not old.warning
    assert open_with("forward.py", {"t": "100"}).selectbox(key="source").value == "mnist"


def test_a_missing_bundle_is_an_error_on_the_page_and_the_other_sources_still_work(monkeypatch):
    def missing():
        raise DatasetError("the bundled MNIST digits are missing: assets/mnist/mnist_digits.npz not found")

    monkeypatch.setattr(fw, "bundled_mnist", missing)
    fw._mnist.clear()  # the cache holds the real bundle from an earlier test
    try:
        at = open_page("forward.py")
        assert "mnist_digits.npz not found" in at.error[0].value and not at.image and not at.metric
        at.selectbox(key="source").set_value("digits")
        rerun(at)
        assert not at.error and "1×8×8" in at.image[0].captions[0]
    finally:
        fw._mnist.clear()


def test_moving_t_changes_x_t_and_the_readouts_and_the_number_input_follows(at):
    before_images, before = _images(at), _metrics(at)
    at.slider(key="t").set_value(900)
    rerun(at)
    assert at.number_input(key="t_number").value == 900
    after = _metrics(at)
    assert all(after[k] != before[k] for k in before)
    assert float(after["ᾱ_t"]) < float(before["ᾱ_t"])
    assert _images(at)[0] != before_images[0]
    assert _images(at)[1] == before_images[1]  # the strip does not depend on t
    at.number_input(key="t_number").set_value(10)
    rerun(at)
    assert at.slider(key="t").value == 10 and float(_metrics(at)["ᾱ_t"]) > float(before["ᾱ_t"])


@pytest.mark.parametrize(("key", "value"), [("linear.beta_start", -1.0), ("T", 1)])
def test_a_bad_schedule_parameter_shows_an_error_and_stops_the_page(at, key, value):
    at.slider(key="t").set_value(400)
    rerun(at)
    at.number_input(key=key).set_value(value)
    rerun(at)
    assert at.error and not at.metric and not at.image
    good, t = (100, 99) if key == "T" else (0.0001, 400)  # t is kept, within the new T
    at.number_input(key=key).set_value(good)
    rerun(at)
    assert not at.error and at.metric and at.slider(key="t").value == at.number_input(key="t_number").value == t


def test_the_2d_mode_noises_a_point_cloud_on_fixed_axes(at):
    at.radio(key="mode").set_value("points")
    rerun(at)
    at.selectbox(key="toy").set_value("8gaussians")
    rerun(at)
    cloud = _charts(at)[0]
    assert cloud["layout"]["xaxis"]["range"] == [-4, 4] and cloud["layout"]["yaxis"]["range"] == [-4, 4]
    names = [trace["name"] for trace in cloud["data"]]
    assert names == ["x_0", "x_t"]
    at.slider(key="t").set_value(999)
    rerun(at)
    moved = _charts(at)[0]["data"]
    assert moved[0] == cloud["data"][0] and moved[1] != cloud["data"][1]  # x_0 stays, x_t moves
    x_t = np.stack([_array(moved[1]["x"]), _array(moved[1]["y"])], 1)
    assert x_t.shape == (2000, 2) and abs(x_t.std() - 1) < 0.1  # at t = T: N(0, I)


def test_compare_schedules_shows_one_row_per_schedule(at):
    rows = len(_images(at))
    at.slider(key="n_compare").set_value(4)
    rerun(at)
    assert len(_images(at)) == rows + 2
    compared = _images(at)[-4:]
    assert len(set(compared)) == 4  # the same x_0 and ε, four schedules: four different strips
    assert at.selectbox(key="cmp4.schedule").value == "scaled_linear"
    captions = [c for image in at.image for c in image.captions]
    assert any("cosine" in c for c in captions) and any("sigmoid" in c for c in captions)
    at.number_input(key="cmp2.T").set_value(1)
    rerun(at)
    assert len(at.error) == 1 and len(_images(at)) == rows + 1  # the bad row says so; the others stay


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_decodes_a_png_and_refuses_a_broken_file(at):
    at.selectbox(key="source").set_value("upload")
    rerun(at)
    assert any("Upload" in i.value for i in at.info) and not at.image
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 80, 4), dtype=np.uint8), "RGBA")
    at.file_uploader(key="upload").upload("photo.png", _png(picture), "image/png")
    at.selectbox(key="resolution").set_value(32)
    rerun(at)
    assert not at.error and at.image and "3×32×32" in at.image[0].captions[0]
    at.file_uploader(key="upload").set_value(("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png"))
    rerun(at)
    assert "Cannot use broken.png" in at.error[0].value and not at.metric


def _write_mnist(raw) -> None:
    """The four idx files torchvision's MNIST reads: magic 0x0800 + d, the d sizes (big-endian uint32), the bytes."""
    raw.mkdir(parents=True)
    for split, n in (("train", 5), ("t10k", 2)):
        for kind, array in (
            ("images-idx3", np.full((n, 28, 28), 200, np.uint8)),
            ("labels-idx1", np.zeros(n, np.uint8)),
        ):
            header = struct.pack(f">{1 + array.ndim}I", 0x0800 + array.ndim, *array.shape)
            (raw / f"{split}-{kind}-ubyte").write_bytes(header + array.tobytes())


def test_other_sources_a_photo_and_a_data_set_that_is_not_on_disk(at, tmp_path, monkeypatch):
    at.selectbox(key="source").set_value("photo")
    rerun(at)
    at.selectbox(key="photo").set_value("flower")
    at.radio(key="channels").set_value(1)
    rerun(at)
    assert "1×64×64" in at.image[0].captions[0]
    monkeypatch.setenv("DDPM_EXPLORER_DATA", str(tmp_path))  # the server's data root: the page has no path box
    at.selectbox(key="source").set_value("dataset")
    rerun(at)
    assert not at.text_input and str(tmp_path) in at.selectbox(key="dataset").help
    assert "--download" in at.info[0].value and not at.error and not at.image
    _write_mnist(tmp_path / "MNIST" / "raw")
    rerun(at)
    at.number_input(key="image_index").set_value(3)
    rerun(at)
    assert not at.info and "1×28×28" in at.image[0].captions[0]
    at.selectbox(key="source").set_value("digits")
    rerun(at)
    at.toggle(key="random_digit").set_value(True)
    rerun(at)
    assert at.image and "Digit **#" in " ".join(m.value for m in at.markdown)


def test_a_chain_too_long_to_run_says_so_and_the_rest_still_shows(at):
    at.toggle(key="chain").set_value(True)
    at.number_input(key="T").set_value(30_000)
    rerun(at)
    at.slider(key="t").set_value(25_000)
    rerun(at)
    assert any("25,001 steps" in i.value for i in at.info) and not at.error
    assert at.download_button(key="download_strip") and at.selectbox(key="cmp2.schedule")
