"""Forward process: slide over t and watch x_0 (an image or a 2D cloud) become x_t, with one fixed ε."""

import streamlit as st

from ddpm_core import equations
from ddpm_core.data import POINT_DATASETS
from ddpm_core.forward import MAX_CHAIN_STEPS, STRIP_LENGTH
from explorer import forward_widgets, links
from explorer.widgets import schedule_picker

st.title("Forward process")
st.markdown(
    r"""
The forward process adds Gaussian noise in $T$ small steps,
$q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$, and any $x_t$ can be drawn from $x_0$
in one shot. Here the noise $\epsilon$ is drawn **once**, from the seed: moving $t$ changes only how much of it is
mixed in.
"""
)
schedule = schedule_picker()
if schedule is None:
    st.stop()  # the picker has said which value is wrong
sched = forward_widgets.schedule_key(schedule)

left, right = st.columns([1, 2])
mode = links.radio("Data", ["image", "points"], "mode", horizontal=True, where=left,
                   format_func={"image": "an image", "points": "a 2D point cloud"}.get)  # fmt: skip
seed = links.number("Noise seed", "seed", default=0, min_value=0, max_value=2**31 - 1, where=left,
                    help="ε ~ N(0, I) is drawn once from this seed")  # fmt: skip
with right:
    if mode == "image":
        source = forward_widgets.image_source()
    else:
        toy = links.selectbox("2D toy", POINT_DATASETS, "toy", format_func=lambda n: n.replace("_", " "))
        source = forward_widgets.toy_source(toy)
if source is None:
    st.stop()  # image_source has said why (no upload yet, data set not on disk, unreadable file)

t = forward_widgets.t_picker(schedule.T)
st.caption(
    f"t is the index 0 … {schedule.T - 1} of the schedule's tensors; the paper's t is index + 1 "
    f"(index 0 is x₁, one step of noise; index {schedule.T - 1} is x_T)."
)
picture, frame = forward_widgets.frame(sched, source.id, t, seed, _x0=source.x0)
r = frame.readout

view, numbers = st.columns([3, 2])
with view:
    if mode == "image":
        shape = "×".join(map(str, source.x0.shape))
        st.image(picture, caption=f"x_t at t = {t}: {shape} values, shown clipped to [-1, 1]")
    else:
        st.plotly_chart(forward_widgets.cloud_figure(source.x0, frame.x_t), key="cloud")
with numbers:
    st.latex(equations.latex("q_sample"))
    st.latex(equations.q_sample_at(t, r.sqrt_alpha_bar, r.sqrt_one_minus_alpha_bar))
    cols = [c for _ in range(2) for c in st.columns(2)]  # 2 × 2: four metrics in a row get cut off
    cols[0].metric("ᾱ_t", f"{r.alpha_bar:.4g}", help="How much of x_0's power is left")
    cols[1].metric("√ᾱ_t", f"{r.sqrt_alpha_bar:.4g}", help="The weight of x_0 in x_t")
    cols[2].metric("SNR_t", f"{r.snr:.4g}", help="ᾱ_t / (1 − ᾱ_t): signal power over noise power")
    cols[3].metric("log-SNR", f"{r.log_snr:.3f}", help="ln SNR_t, the natural log")
    st.plotly_chart(forward_widgets.histogram_figure(frame.histogram), key="histogram")

st.subheader(f"x_t at {STRIP_LENGTH} values of t")
png, ts = forward_widgets.strip_row(sched, source.id, seed, _x0=source.x0)
st.image(png, caption=f"the same x_0 and the same ε at t = {', '.join(map(str, ts))}")
st.download_button("Download the strip (PNG)", png, file_name="forward_strip.png", mime="image/png",
                   key="download_strip", on_click="ignore")  # fmt: skip

st.subheader("Closed form vs chain")
st.markdown(
    r"""
Steps compose: two steps of $x_t = \sqrt{\alpha_t}x_{t-1} + \sqrt{1-\alpha_t}\,\epsilon_{t-1}$ are one Gaussian step,
because the sum of two independent Gaussian noises is Gaussian with the variances added:
"""
)
st.latex(equations.latex("q_chain"))
run_chain = links.flag("Run the chain at each t", "chain", toggle=True,
                       help="64 chains of t + 1 q_steps vs 64 draws of q_sample: up to a second per t")  # fmt: skip
if not run_chain:
    st.caption("Switch on to check it here: the chain costs a fraction of a second at every new t.")
elif t + 1 > MAX_CHAIN_STEPS:
    st.info(f"The chain to t = {t} would take {t + 1:,} steps; pick t < {MAX_CHAIN_STEPS:,} to run it here.")
else:
    points = len(source.x0) if mode == "points" else None
    forward_widgets.show_chain(*forward_widgets.chain(sched, source.id, t, seed, _x0=source.x0), points)

with st.expander("Compare schedules: the same x_0 and the same ε"):
    n = links.slider("Schedules", "n_compare", default=2, min_value=2, max_value=4)
    for i, default in enumerate(["linear", "cosine", "sigmoid", "scaled_linear"][:n], start=1):
        other = schedule_picker(key=f"cmp{i}.", default=default, label=f"Schedule {i}")
        if other is not None:  # else the picker has shown the error; the other rows still show
            row, _ = forward_widgets.strip_row(forward_widgets.schedule_key(other), source.id, seed, _x0=source.x0)
            st.image(row, caption=repr(other))
