"""The Sample page's classifier-free guidance (Ho & Salimans 2022): a class and a scale for a class-conditional
checkpoint, and a grid of one x_T at several guidance scales."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st
import torch

from ddpm_core import equations
from ddpm_core.compare import GuidanceCell, compare_guidance
from ddpm_core.metrics import predicted_digits
from ddpm_core.pictures import image_grid, png_bytes
from explorer import gate, links, sampling_progress

SCALES = (0.0, 1.0, 2.0, 4.0, 7.0)  # 0: unconditional, 1: conditional, above: guided
NONE = -1  # the class picker's "no class": unconditional sampling through the null label


def is_conditional(loaded) -> bool:
    return loaded.ckpt.model_config.num_classes > 0


def with_class(loaded, request):
    """For a conditional checkpoint: the class to ask for (key "class_label") and the guidance scale (key
    "guidance") → the request with them in its SamplingConfig; any other checkpoint: the request as it is."""
    if not is_conditional(loaded):
        return request
    names = loaded.ckpt.classes
    left, right = st.columns(2)
    label = links.selectbox("Class", [NONE, *range(len(names))], key="class_label", default=0, where=left,
                            format_func=lambda i: "none (unconditional)" if i == NONE else names[i],
                            help="What the model is asked to draw")  # fmt: skip
    scale = links.slider("Guidance scale s", key="guidance", default=2.0, min_value=0.0, max_value=10.0, step=0.5,
                         where=right, help="0: ignore the class; 1: conditional; more: more class-like")  # fmt: skip
    st.latex(equations.latex("guidance"))
    config = replace(request.config, class_label=None if label == NONE else int(label), guidance=float(scale))
    return replace(request, config=config)


def _classify(loaded):
    """Predicted labels (N,) of digits samples, for the grid's accuracy; None where no classifier fits."""
    if loaded.ckpt.config.dataset != "digits" or tuple(loaded.ckpt.sample_shape) != (1, 8, 8):
        return None
    return lambda x: torch.from_numpy(predicted_digits(x))


def guidance_panel(loaded, request) -> None:
    """An expander: every class in a row, the same x_T at each guidance scale; the classifier's accuracy on digits."""
    if not is_conditional(loaded):
        return
    state = st.session_state
    with st.expander("Guidance scales: one x_T, every class", key="guidance_panel", on_change="rerun"):
        st.markdown("Each grid has a row per class and the **same** x_T in every grid: only the scale s differs. "
                    "s = 0 ignores the class, s = 1 is plain conditional sampling, larger s trades variety for "
                    "class-likeness.")  # fmt: skip
        scales = links.multiselect("Scales", SCALES, key="guidance_scales", default=SCALES, format_func="{:g}".format)
        per_class = 4 if len(loaded.ckpt.classes) > 4 else 8
        classes = range(len(loaded.ckpt.classes))
        steps = (request.config.steps,) * (len(scales) * len(classes))  # one cell per scale and class
        grid = gate.Sampling(per_class, steps, what="The grid")
        if st.button("Sample the grid", key="guidance_grid", disabled=not scales) and gate.show(
            decision := gate.sampling(links.classroom(), grid)
        ):
            state.pop("sample.guidance", None)
            per_class = decision.n
            with sampling_progress.cancellable("guidance"):
                bar = st.progress(0.0, text="Sampling…")
                cells = compare_guidance(loaded.net, loaded.diffusion, loaded.ckpt.sample_shape, classes,
                                         sorted(scales), per_class, request.seed, classify=_classify(loaded),
                                         progress=sampling_progress.progress_callback(bar),
                                         config=request.config)  # fmt: skip
                bar.empty()
                state["sample.guidance"] = (str(loaded.ckpt.path), per_class, cells)
        found = state.get("sample.guidance")
        if found and found[0] == str(loaded.ckpt.path):
            _show(found[1], found[2])


def _show(per_class: int, cells: list[GuidanceCell]) -> None:
    columns = st.columns(min(len(cells), 5))
    for i, cell in enumerate(cells):
        with columns[i % len(columns)]:
            st.image(png_bytes(image_grid(cell.samples, nrow=per_class)), caption=f"s = {cell.scale:g}")
            accuracy = "" if cell.accuracy is None else f"classifier agrees: {cell.accuracy:.0%} · "
            st.caption(f"{accuracy}{cell.wall_time:.1f} s")
