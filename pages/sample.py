"""Sample: run the reverse chain from x_T ~ N(0, I) with DDPM or DDIM, watch it as a GIF, scrub through its steps,
score the samples, and compare samplers on the same noise."""

import streamlit as st

from ddpm_core import equations
from explorer import checkpoints, guidance_widgets, importance_widgets, sample_views, sample_widgets, sampling_progress

st.title("Sample")
st.markdown(
    r"""
Sampling runs the chain backwards: draw $x_T \sim \mathcal{N}(0, I)$, then let the trained network
$\epsilon_\theta(x_t, t)$ remove a little noise at each step. At every step the model also has an estimate
$\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t))/\sqrt{\bar\alpha_t}$ of the final sample: watch it
sharpen while $x_t$ clears.
"""
)
loaded = checkpoints.checkpoint_picker()
if loaded is None:
    st.info("Pick another checkpoint: the bundled ones always work.")
    st.stop()
with st.expander("The checkpoint's settings", expanded=True):
    st.markdown(checkpoints.config_table(loaded))
    st.caption("Every training setting (the TrainConfig saved in the file):")
    st.json(loaded.ckpt.config.to_dict(), expanded=False)

st.subheader("Sampler")
request = guidance_widgets.with_class(loaded, sample_widgets.sampler_request(loaded))
config = request.config
st.caption(sample_widgets.STEP_LABEL[config.sampler])
for equation in equations.sampling(config.sampler, config.variance, config.eta):
    st.latex(equation)
if config.clip_x0:
    st.caption(
        "With clipping, x̂₀ is clipped to [-1, 1] first and the step is rebuilt from it (DDPM: the posterior mean "
        "μ̃_t(x_t, x̂₀); DDIM: ε re-derived from the clipped x̂₀). For DDIM, t−1 stands for the next strided step."
    )
elif config.sampler == "ddim":
    st.caption("For DDIM, t−1 stands for the next of the strided steps (e.g. 999, 979, …, 19, then x_0).")

state = st.session_state
if sampling_progress.was_cancelled():  # a click on Cancel (or any widget) interrupted the last run's sampling
    st.warning("Sampling cancelled: nothing was kept. Press **Generate** (or **Compare**) to sample again.")
if refusal := sample_widgets.refusal(loaded, request):
    st.warning(refusal)
else:
    st.caption(sample_widgets.expected_time(loaded, request))
if st.button("Generate", key="generate", type="primary", disabled=bool(refusal)) and not refusal:
    state.pop("sample.result", None)  # it no longer matches what is asked for, whether or not this one finishes
    with sampling_progress.cancellable("generate"):
        view = state["sample.result"] = sample_widgets.generate(loaded, request)
    state["frame"] = len(view.result.trajectory) - 1  # the scrubber starts on the samples
view = state.get("sample.result")
if view is None or view.checkpoint != str(loaded.ckpt.path):
    st.info("Press **Generate** to sample from this checkpoint.")
else:
    result, asked = view.result, view.request
    c, steps = asked.config, len(result.timesteps)
    what = f"{c.sampler.upper()}, {steps:,} steps" + (f", η = {c.eta:g}" if c.sampler == "ddim" else "")
    st.subheader("Result")
    st.markdown(f"{asked.n:,} samples ({what}, seed {asked.seed}) in **{result.wall_time:.2f} s** on {loaded.device}.")
    final, movie = st.columns([2, 3])
    final.image(view.png, output_format="PNG", caption="x_0: the final samples")
    with movie:
        st.markdown(sample_views.gif_html(view.gif, "the reverse trajectory"), unsafe_allow_html=True)
        most = sample_widgets.GIF_MAX_IMAGES
        shown = "" if loaded.points or asked.n <= most else f" (the first {most} samples)"
        st.caption(f"x_t (left) and x̂₀ (right) from t = T down to 0{shown}, {len(result.trajectory)} frames")
    buttons = st.columns(4)
    buttons[0].download_button("Download the GIF", view.gif, file_name="trajectory.gif", mime="image/gif",
                               key="download_gif", on_click="ignore")  # fmt: skip
    buttons[1].download_button("Download the samples (PNG)", view.png, file_name="samples.png", mime="image/png",
                               key="download_png", on_click="ignore")  # fmt: skip
    sample_views.show_metric(view.metric, view.metric_note, asked.n)

    st.subheader("Step by step")
    records = result.trajectory
    if state.get("frame") not in range(len(records)):
        state["frame"] = len(records) - 1
    k = st.select_slider("Recorded step", range(len(records)), key="frame",
                         format_func=lambda i: f"t = {records[i].t}")  # fmt: skip
    record = records[k]
    st.markdown(f"**t = {record.t}** (record {k + 1} of {len(records)}; t = 0 is the returned x_0)")
    left, right = st.columns(2)
    if loaded.points:
        left.plotly_chart(sample_views.points_figure(record, view.lim), key="frame_points")
        left.caption(f"x_t and x̂₀ at t = {record.t}")
        right.plotly_chart(sample_views.points_animation(records, view.lim), key="animation")
        right.caption("The cloud over t: press ▶ Play; click x̂₀ in the legend to show it too. Axes are fixed.")
    else:
        for where, x, name in ((left, record.x_t, "x_t"), (right, record.x0_pred, "x̂₀")):
            where.image(sample_views.picture(x, view.lim), output_format="PNG", caption=f"{name} at t = {record.t}")

guidance_widgets.guidance_panel(loaded, request)
importance_widgets.importance_panel(loaded)

# keyed, with on_change: its open state lives in session state, so the rerun of "Compare" keeps it open
with st.expander("DDPM vs DDIM: the same model and x_T at several step counts", key="compare_panel", on_change="rerun"):
    st.markdown(
        "Every cell starts from the **same** x_T (the seed above) and uses the N, clipping, η (DDIM) and σ_t² "
        "(DDPM) set above. DDIM with η = 0 is deterministic: fewer steps trace roughly the same samples."
    )
    chosen = sample_widgets.compare_picker(loaded)
    if st.button("Compare", key="compare", disabled=not chosen):
        state.pop("sample.compare", None)
        with sampling_progress.cancellable("compare"):
            state["sample.compare"] = sample_widgets.run_compare(loaded, request, chosen)
    grid = state.get("sample.compare")
    if grid is not None and grid.checkpoint == str(loaded.ckpt.path):
        st.caption(f"{grid.n:,} samples per cell, seed {grid.seed}.")
        sample_views.show_compare(grid)
