"""Train: launch a run of ε_θ in its own process, watch its loss, loss per t and previews live, stop or resume it,
and compare runs. The run folder is all this page reads; explorer/jobs.py starts and stops the trainer."""

import streamlit as st

from ddpm_core import equations, run_history
from explorer import identity, jobs, links, objective_widgets, recipe_widgets, train_queue, train_widgets

st.title("Train")
st.markdown(
    r"""
Training teaches $\epsilon_\theta$ to recognise the noise in $x_t$: draw $t$ uniformly from $1 \dots T$ and
$\epsilon \sim \mathcal{N}(0, I)$, noise $x_0$ in one shot, and regress $\epsilon$ — the paper's simplified loss.
Each run trains in its own process (the CLI `python -m ddpm_core.train`) and writes its run folder, which this page
reads: the app stays responsive, and a run goes on if you close the tab. Runs share the server: when every slot is
taken, a new run waits in a queue and starts by itself.
"""
)
st.latex(equations.latex("loss_simple"))

root = jobs.runs_root()
who = identity.requester()  # this browser (its runs are its own to stop, resume, cancel, delete) and the teacher
identity.teacher_panel(who)
reg = train_queue.registry()
reg.poll(root)  # start queued runs whose slot has freed up (a daemon thread does it too, once a second)

st.header("New run")
if not train_queue.training_off():  # the teacher's switch: no form, no launch; the runs below stay visible
    fresh = recipe_widgets.recipe_picker()
    config = train_widgets.config_form(fresh)
    dataset = st.session_state["dataset"]
    name_col, launch_col = st.columns([3, 1], vertical_alignment="bottom")
    name = name_col.text_input("Run name", key="name", placeholder=f"{dataset}-<date>-<time>", max_chars=80)
    run_dir, name_error = None, None
    if name.strip():
        try:
            run_dir = jobs.run_folder(name, dataset, root)
        except ValueError as e:
            name_error = str(e)
    launch = launch_col.button("Launch", key="launch", type="primary", icon=":material/rocket_launch:",
                               disabled=config is None or name_error is not None)  # fmt: skip
    folder = run_dir.name if run_dir else f"{dataset}-<date>-<time>"
    if name_error:
        st.error(name_error)
    else:
        st.caption(
            f"Saved in `{root / folder}`"
            + (" (the name made safe for a folder)" if run_dir and folder != name.strip() else "")
        )
    train_queue.backend_notice()
    train_queue.capacity_notice(root)
    if launch:
        train_queue.launch(config, run_dir or jobs.run_folder("", config.dataset, root), who)

rows = run_history.history(root)
if not rows:
    st.info(f"No runs in `{root}` yet: launch one above.")
    st.stop()
names = [r.name for r in rows]
if st.session_state.get("run") not in names:
    st.session_state.pop("run", None)  # its folder is gone

st.header("Watch a run")
pick_col, smooth_col = st.columns([2, 1])
# the labels stay plain names: a keyed selectbox keeps the label it was showing when its options' labels change
picked = links.selectbox("Run", names, key="run", where=pick_col, help="The most recently updated first")
smoothing = links.slider("Smoothing of the loss curves", key="smoothing", default=0.8, min_value=0.0,
                         max_value=0.99, step=0.01, where=smooth_col,
                         help="Weight of the exponential moving average (0: none)")  # fmt: skip
train_widgets.run_panel(root / picked, smoothing, who)
objective_widgets.before_after(root / picked)

st.header("History")
train_widgets.history_table(root, live=any(train_widgets.state_of(r) in train_widgets.LIVE for r in rows))
st.caption(
    "Final loss: the last log interval's mean. Metric: the headline number of the run's `evaluation.json`, "
    "written when a run ends (FD of 1000 DDIM-50 samples for digits, MMD/sliced W1 for 2D; larger images on a CPU "
    "only with *Evaluate samples* > 0, or `python -m ddpm_core.evaluate --checkpoint DIR > DIR/evaluation.json`); "
    "lower is better."
)
compare = links.multiselect("Compare runs", names, key="compare", max_selections=2, placeholder="pick two runs")
if compare:
    curves = [(n, *run_history.loss_curve(run_history.read_records(root / n))) for n in compare]
    st.plotly_chart(train_widgets.loss_figure(curves, smoothing, "Training loss"), key="compare_loss")
    for col, n in zip(st.columns(len(compare)), compare, strict=True):
        with col:
            train_widgets.previews(root / n, kinds=("ema",))
