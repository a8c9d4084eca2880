"""Edit: what a trained ε_θ can do beyond sampling, without retraining — SDEdit, inpainting (RePaint), DDIM
inversion and interpolation in x_T (ddpm_core/edit.py)."""

import streamlit as st

from ddpm_core.equations import latex
from explorer import checkpoints, edit_views, edit_widgets, sampling_progress

st.title("Edit")
st.markdown(
    r"""
A trained $\epsilon_\theta$ does more than sample from noise. **SDEdit** noises an input part of the way and lets the
model denoise it; **inpainting** regenerates only a masked part; **DDIM inversion** runs the deterministic sampler
backwards to find the $x_T$ an input comes from; **interpolation** walks between two noises and decodes each.
"""
)
loaded = checkpoints.checkpoint_picker()
if loaded is None:
    st.info("Pick another checkpoint: the bundled ones always work.")
    st.stop()

method = edit_widgets.method_picker()
st.latex(latex(edit_widgets.EQUATION[method]))

source = None
if method != "interpolate":
    st.subheader("Input")
    source = edit_widgets.input_source(loaded)
    if source is None:
        st.stop()  # input_source has said why (no upload yet, data set not on disk, unreadable file)
    left, right = st.columns([1, 3])
    left.image(edit_views.picture_png(source.x0), output_format="PNG", caption="x_0")
    right.caption(f"The input: {source.caption}.")

st.subheader("Sampler")
settings = edit_widgets.settings(loaded, method)

st.subheader(edit_widgets.METHODS[method])
if sampling_progress.was_cancelled():
    st.warning("Cancelled: nothing was kept. Press **Run** to edit again.")
if method == "sdedit":
    edit_views.sdedit_panel(loaded, source, settings)
elif method == "inpaint":
    edit_views.inpaint_panel(loaded, source, settings)
elif method == "invert":
    edit_views.invert_panel(loaded, source, settings)
else:
    edit_views.interpolate_panel(loaded, settings)
