"""Run folders read back for the app, from folders written by hand with ddpm_core.runs in the trainer's formats:
history rows, smoothing, loss per t bucket, progress and ETA, previews, logs — and garbage or half-written files."""

import itertools
import json
import math
import os

import pytest

from ddpm_core import run_history as rh
from ddpm_core import runs
from ddpm_core.config import TrainConfig


def record(step: int, loss: float, *, time: float, elapsed: float, buckets=None, ips: float = 1000.0) -> dict:
    """A metrics.jsonl record as the trainer writes it."""
    return {"step": step, "loss": loss, "loss_buckets": buckets or [loss] * 10, "lr": 1e-3, "images_per_s": ips,
            "elapsed": elapsed, "time": time}  # fmt: skip


def make_run(root, name, *, state="done", steps=(10, 20, 30), loss0=1.0, total=30, config=None, **status) -> object:
    run = root / name
    run.mkdir(parents=True)
    runs.write_text(run / runs.CONFIG, (config or TrainConfig(steps=total)).to_json())
    for i, step in enumerate(steps):
        runs.append_metrics(run, record(step, loss0 / (i + 1), time=1000.0 + step, elapsed=float(step)))
    fields = {"pid": 1, "step": steps[-1] if steps else 0, "total_steps": total, "error": None, **status}
    runs.write_status(run, state, **fields)
    return run


def test_a_history_row_reads_config_status_metrics_and_evaluation(tmp_path):
    config = TrainConfig(dataset="moons", schedule="cosine", T=200, rescale_zero_terminal_snr=True, steps=30)
    run = make_run(tmp_path, "moons-run", config=config)
    row = rh.history_row(run)
    assert (row.name, row.dataset, row.schedule, row.state) == ("moons-run", "moons", "cosine T=200 + zero SNR", "done")
    assert row.step == 30 and row.total_steps == 30 and row.final_loss == pytest.approx(1 / 3)
    assert row.metric == "" and row.error == ""
    runs.write_json(run / rh.EVALUATION, {"mmd": 0.0123, "sliced_wasserstein": 0.0456, "n": 1000})
    assert rh.history_row(run).metric == "sliced W1 0.0456"
    runs.write_json(run / rh.EVALUATION, {"pixel_fd": 0.0654, "feature_fd": None, "confidence": 0.8})
    table = rh.history_row(run).table_row()
    assert table == {"name": "moons-run", "dataset": "moons", "schedule": "cosine T=200 + zero SNR",
                     "steps": "30 / 30", "final loss": pytest.approx(1 / 3), "metric": "pixel FD 0.0654",
                     "bound": "", "status": "done"}  # fmt: skip


def test_history_lists_run_folders_newest_first_and_skips_other_folders(tmp_path):
    old = make_run(tmp_path, "old")
    runs.write_json(old / runs.STATUS, {**runs.read_status(old), "updated": 1.0})  # write_status stamps the time
    make_run(tmp_path, "new", state="failed", error="the loss became nan at step 20")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    rows = rh.history(tmp_path)
    assert [r.name for r in rows] == ["new", "old"]
    assert rows[0].state == "failed" and rows[0].error == "the loss became nan at step 20"
    assert rh.history(tmp_path / "missing") == []


def test_garbage_and_missing_files_give_a_row_not_an_exception(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / runs.STATUS).write_text("{not json")
    (run / runs.CONFIG).write_text("[1, 2, 3]")
    (run / runs.METRICS).write_text('42\n"text"\n{"step": "x", "loss": 1}\n{"step": 5}\n\x00\xff garbage\n')
    row = rh.history_row(run)
    assert (row.state, row.dataset, row.schedule, row.step, row.final_loss) == ("unknown", "", "", 0, None)
    assert rh.read_records(run) == []
    assert rh.progress(rh.read_status(run), []).fraction == 0.0
    runs.write_json(run / runs.STATUS, {"state": "exploded", "step": "many"})
    assert rh.history_row(run).state == "unknown"
    only_log = tmp_path / "only-log"
    only_log.mkdir()
    (only_log / rh.LOG).write_text("Traceback (most recent call last):\nImportError: no module named torch\n")
    assert {r.name for r in rh.history(tmp_path)} == {"broken", "only-log"}
    assert rh.log_error(only_log) == "ImportError: no module named torch"


def test_a_half_written_last_metrics_line_is_skipped(tmp_path):
    run = make_run(tmp_path, "writing", state="running", pid=os.getpid(), total=100)
    with open(run / runs.METRICS, "a") as f:
        f.write('{"step": 40, "loss": 0.2, "loss_bu')  # the trainer is in the middle of this line
    assert [r["step"] for r in rh.read_records(run)] == [10, 20, 30]
    row = rh.history_row(run)
    assert row.state == "running" and row.final_loss == pytest.approx(1 / 3)


def test_a_running_status_whose_process_is_gone_reads_as_interrupted(tmp_path):
    run = make_run(tmp_path, "killed", state="running", pid=2**22 + 1)  # above Linux's pid_max
    row = rh.history_row(run)
    assert row.state == "interrupted" and "pid 4194305" in row.error
    assert rh.run_state({"state": "running", "pid": os.getpid()}) == "running"
    assert rh.run_state({"state": "running"}) == "interrupted"


def test_ema_smoothing_is_debiased_and_follows_a_step():
    assert rh.ema_smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
    smooth = rh.ema_smooth([1.0] * 5 + [0.0] * 20, 0.8)
    assert smooth[4] == pytest.approx(1.0)
    assert smooth[5] == pytest.approx(0.8 * (1 - 0.8**5) / (1 - 0.8**6))
    assert all(a > b for a, b in itertools.pairwise(smooth[4:])) and smooth[-1] < 0.02
    assert rh.ema_smooth([3.0, 1.0], 0.0) == [3.0, 1.0]
    nan_kept = rh.ema_smooth([1.0, math.nan, 1.0], 0.5)
    assert nan_kept == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="weight"):
        rh.ema_smooth([1.0], 1.0)


def test_bucket_losses_average_the_last_records_and_keep_empty_buckets():
    records = [
        record(10, 1.0, time=0, elapsed=0, buckets=[9.0] * 10),
        record(20, 1.0, time=0, elapsed=0, buckets=[1.0, 2.0, None, *[0.5] * 7]),
        record(30, 1.0, time=0, elapsed=0, buckets=[3.0, 4.0, None, *[0.5] * 7]),
    ]
    buckets = rh.bucket_losses(records, last=2)
    assert buckets[:3] == [2.0, 3.0, None] and buckets[3:] == [0.5] * 7
    assert rh.bucket_losses(records, last=3)[0] == pytest.approx(13 / 3)
    assert rh.bucket_losses([{"step": 1, "loss": 1.0}]) is None


@pytest.mark.parametrize(
    ("T", "n", "labels"),
    [
        (1000, 10, ["1–100", "101–200", "201–300", "301–400", "401–500", "501–600", "601–700", "701–800",
                    "801–900", "901–1000"]),
        (15, 10, ["1–2", "3–3", "4–5", "6–6", "7–8", "9–9", "10–11", "12–12", "13–14", "15–15"]),
    ],
)  # fmt: skip
def test_bucket_labels_match_the_trainers_bucketing(T, n, labels):
    assert rh.bucket_labels(T, n) == labels
    # the trainer puts index i in bucket ⌊i·n/T⌋; label k covers paper t = index + 1
    for index in range(T):
        lo, hi = map(int, labels[index * n // T].split("–"))
        assert lo <= index + 1 <= hi


def test_progress_eta_and_throughput_from_the_pace_of_the_records():
    # 10 steps/s since the process started at wall time 100 (elapsed counts from there)
    records = [record(s, 1.0, time=100.0 + s / 10, elapsed=s / 10, ips=1280.0) for s in (50, 100, 150, 200)]
    status = {"state": "running", "step": 200, "total_steps": 1000}
    p = rh.progress(status, records, now=120.0)
    assert (p.step, p.total, p.fraction, p.images_per_s) == (200, 1000, 0.2, 1280.0)
    assert p.eta_s == pytest.approx(80.0)  # 800 steps at 10/s, the last record was written just now
    assert rh.progress(status, records, now=130.0).eta_s == pytest.approx(70.0)  # 10 s since the last record
    assert rh.progress({**status, "step": 1000}, records, now=120.0).eta_s == 0.0
    assert rh.progress(status, [], now=0).eta_s is None


def test_the_pace_of_a_resumed_run_counts_only_its_own_process():
    first = [record(s, 1.0, time=100.0 + s, elapsed=float(s)) for s in (10, 20, 30)]  # 1 step/s, until step 30
    # resumed at step 30 an hour later, at 5 steps/s: elapsed starts again from 0
    second = [record(30 + s, 1.0, time=3700.0 + s / 5, elapsed=s / 5) for s in (10, 20)]
    assert rh.steps_per_second(first) == pytest.approx(1.0)
    assert rh.steps_per_second(first + second) == pytest.approx(5.0)
    assert rh.steps_per_second(first[:1]) == pytest.approx(1.0)  # one record: steps since 0
    assert rh.steps_per_second([{"step": 10, "loss": 1.0}]) is None  # no clock in the record


def test_latest_previews_and_log_tail(tmp_path):
    run = make_run(tmp_path, "previews")
    assert rh.latest_previews(run) is None
    (run / runs.PREVIEWS).mkdir()
    for name in ("step_000010_raw.png", "step_000010_ema.png", "step_000030_ema.png", "step_30_raw.png", "x.png"):
        (run / runs.PREVIEWS / name).write_bytes(b"")
    latest = rh.latest_previews(run)
    assert latest.step == 30 and latest.raw is None and latest.ema.name == "step_000030_ema.png"
    (run / rh.LOG).write_text("".join(f"line {i}\n" for i in range(100)) + "error: MNIST not found under data\n")
    assert rh.log_tail(run, lines=2) == "line 99\nerror: MNIST not found under data"
    assert rh.log_error(run) == "MNIST not found under data"
    assert rh.log_tail(tmp_path / "nowhere") == "" and rh.log_error(tmp_path / "nowhere") == ""


@pytest.mark.parametrize(("seconds", "text"), [(None, "—"), (4.4, "4 s"), (65, "1 min 05 s"), (3725, "1 h 02 min")])
def test_format_duration(seconds, text):
    assert rh.format_duration(seconds) == text


def test_records_round_trip_through_the_real_writer(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    rec = record(5, 0.5, time=1.0, elapsed=1.0, buckets=[None, *[0.1] * 9])
    runs.append_metrics(run, rec)
    assert rh.read_records(run) == [json.loads(json.dumps(rec))]


@pytest.mark.parametrize(
    ("bound", "shown"),
    [({"bits_per_dim": 2.8812, "stderr": 0.0312}, "2.88 ± 0.031 bits/dim"),
     ({"bits_per_dim": 1.2, "stderr": None}, "1.2 bits/dim"),  # one sample: no standard error
     ({"error": "RuntimeError: out of memory"}, ""), ({"bits_per_dim": "2.9"}, ""),
     ({"bits_per_dim": float("nan")}, ""), ("2.9", ""), (None, "")],
)  # fmt: skip
def test_the_history_shows_the_bound_of_evaluation_json_when_it_is_a_number(tmp_path, bound, shown):
    run = make_run(tmp_path, "run")
    runs.write_json(run / rh.EVALUATION, {"pixel_fd": 0.5, "bound": bound})
    assert rh.bound_summary(run) == shown and rh.history_row(run).table_row()["bound"] == shown
