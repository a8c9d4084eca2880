"""The server's settings for a classroom: one TOML file the teacher writes, named by $DDPM_EXPLORER_CONFIG or by
`streamlit run explorer/app.py -- --config classroom.toml`. Every setting is optional:

    [server]
    data_root = "data"       # the one folder the UI reads data sets (and image folders) from, besides runs/, assets/
    teacher_token = "…"      # whoever enters it (Train page, sidebar) may stop, resume, cancel and delete any run
    localhost_is_teacher = true   # a browser on the server's own machine is the teacher (false behind a local proxy)

    [training]
    enabled = true           # false: nobody can launch or resume a run from the UI (the CLI still can)
    max_concurrent = 1       # runs training at once; later ones wait in a queue (default: 1 on a CPU, 2 with a GPU)
    per_session = 1          # runs one browser session may have training or waiting
    max_steps = 20000        # optimiser steps a run launched or resumed from the UI may train to (default: no cap)

    [sampling]
    max_n = 256              # samples per request (2D point clouds: 8× as many points)
    max_steps = 1000         # sampler steps per request

    [cluster]                # runs train as Ray Jobs on a cluster instead of as this server's child processes
    address = "http://head:8265"   # the Ray dashboard; $DDPM_EXPLORER_RAY also names it (the default: no cluster)
    num_cpus = 1             # CPUs each run asks for
    num_gpus = 0.25          # GPUs a run on a GPU asks for (fractions share one GPU; 0: a whole one)
    code_dir = "/srv/ddpm-explorer"  # where the nodes have this repository (default: the app's own path)
    working_dir = false      # true: Ray uploads this repository with each job instead (runtime_env working_dir)
    python = "/srv/venv/bin/python"  # the nodes' Python with torch (default: the app's own interpreter)

    [pages]
    hidden = ["train"]       # pages left out of the navigation: home, forward, schedules, train, sample

    [defaults.forward]       # a page's widget values on opening it, by widget key; a shared link still wins
    schedule = "cosine"
    t = 250

    [locked.schedules]       # fixed widget values: shown greyed out, and no link can change them
    T = 1000

A file with mistakes never stops the app: each wrong entry is skipped, and `problems` says which and why (the Home
page shows them). The environment still wins where it speaks: $DDPM_EXPLORER_MAX_RUNS, $DDPM_EXPLORER_TRAINING=off,
$DDPM_EXPLORER_DATA, $DDPM_EXPLORER_RAY.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV, TRAINING_ENV, DATA_ENV, MAX_RUNS_ENV, RAY_ENV = (
    "DDPM_EXPLORER_CONFIG",
    "DDPM_EXPLORER_TRAINING",
    "DDPM_EXPLORER_DATA",
    "DDPM_EXPLORER_MAX_RUNS",
    "DDPM_EXPLORER_RAY",
)
ENVIRONMENT = (CONFIG_ENV, TRAINING_ENV, DATA_ENV, MAX_RUNS_ENV, RAY_ENV)
PAGE_NAMES = ("home", "forward", "schedules", "train", "sample", "edit", "bound")
MAX_N, MAX_STEPS = 256, 1000  # the defaults of [sampling]
Value = bool | int | float | str | list  # a list: a multiselect's options


@dataclass(frozen=True)
class ClusterSettings:
    """[cluster]: where runs train when not on this server (explorer/backends.py). No address: here."""

    address: str = ""  # the Ray dashboard's URL, e.g. http://head:8265
    num_cpus: float = 1.0  # each run's request
    num_gpus: float = 0.0  # a GPU run's request (0: a whole GPU)
    code_dir: str = ""  # the repository's path on the nodes ("": the app's own)
    working_dir: bool = False  # Ray uploads the repository with each job
    python: str = sys.executable  # the interpreter on the nodes


@dataclass(frozen=True)
class Classroom:
    data_root: Path = ROOT / "data"
    training: bool = True
    teacher_token: str | None = None  # None: no sign-in; the teacher is then only a browser on this machine
    localhost_is_teacher: bool = True
    max_concurrent: int | None = None  # None: 1 on a CPU, 2 with a GPU (explorer.jobs decides)
    per_session: int = 1
    max_train_steps: int | None = None  # None: no cap (one user on a laptop may train as long as they like)
    max_n: int = MAX_N
    max_steps: int = MAX_STEPS
    hidden_pages: tuple[str, ...] = ()
    cluster: ClusterSettings = ClusterSettings()
    defaults: dict[str, dict[str, Value]] = field(default_factory=dict)  # page → widget key → value
    locked: dict[str, dict[str, Value]] = field(default_factory=dict)
    source: str = ""  # the file these came from; "" when none was given
    problems: tuple[str, ...] = ()

    def default(self, page: str, key: str) -> Value | None:
        return self.locked.get(page, {}).get(key, self.defaults.get(page, {}).get(key))

    def is_locked(self, page: str, key: str) -> bool:
        return key in self.locked.get(page, {})


def current() -> Classroom:
    """The settings in force now: the file named by the arguments or the environment, reread when it or the
    environment variables change (every page run and every launch asks)."""
    path = config_path()
    try:
        mtime = Path(path).stat().st_mtime if path else 0.0
    except OSError:
        mtime = -1.0  # missing: load_classroom lists it among its problems
    return _cached(path, mtime, tuple((k, os.environ.get(k, "")) for k in ENVIRONMENT))


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime: float, environ: tuple[tuple[str, str], ...]) -> Classroom:
    return load_classroom(path, dict(environ))


def config_path(argv: list[str] | None = None) -> str:
    """`--config FILE` among the script's arguments (after `--` on the streamlit command line), else
    $DDPM_EXPLORER_CONFIG, else ""."""
    args = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return os.environ.get(CONFIG_ENV, "")


def load_classroom(path: str | Path | None, environ: dict | None = None) -> Classroom:
    """The settings of the file at path (None or "": none) with the environment applied on top."""
    env = os.environ if environ is None else environ
    values, problems = {}, []
    if path:
        try:
            values, problems = _parse(tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except OSError as e:
            problems.append(f"cannot read the classroom file {path}: {e.strerror or e}")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            problems.append(f"the classroom file {path} is not valid TOML: {e}")
    if env.get(TRAINING_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        values["training"] = False
    if max_runs := _positive_int(env.get(MAX_RUNS_ENV, "")):
        values["max_concurrent"] = max_runs
    if data := env.get(DATA_ENV, "").strip():
        values["data_root"] = data
    if address := env.get(RAY_ENV, "").strip():
        try:
            values.setdefault("cluster", {})["address"] = _address(address)
        except ValueError as e:
            problems.append(f"${RAY_ENV} {e}; ignored")
    if "cluster" in values:
        values["cluster"] = ClusterSettings(**values["cluster"])
    if "data_root" in values:
        root = Path(str(values["data_root"])).expanduser()
        values["data_root"] = (root if root.is_absolute() else ROOT / root).resolve()
    return Classroom(**values, source=str(path or ""), problems=tuple(problems))


def _positive_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


# Each known setting: (section, key) → (Classroom field, check returning the value or raising ValueError)
def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _count(v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"must be a whole number ≥ 1, got {v!r}")
    return v


def _text(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v


def _address(v):
    v = _text(v).strip()
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must be the Ray dashboard's URL, e.g. http://head:8265, got {v!r}")
    return v.rstrip("/")


def _cpus(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1024:
        raise ValueError(f"must be a number of CPUs > 0, e.g. 1 or 0.5, got {v!r}")
    return float(v)


def _gpus(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 64:
        raise ValueError(f"must be a number of GPUs ≥ 0, e.g. 1 or 0.25 (four runs share one GPU), got {v!r}")
    return float(v)


def _token(v):
    """A secret worth the name: printable, without spaces, 12 to 200 characters (the problem never shows it)."""
    if not isinstance(v, str) or not 12 <= len(v) <= 200 or not v.isprintable() or any(c.isspace() for c in v):
        raise ValueError("must be a string of 12 to 200 printable characters without spaces (a passphrase the "
                         "students do not know); no teacher sign-in until it is")  # fmt: skip
    return v


class _Partly(ValueError):
    """A list setting with some bad entries: the good ones (kept) still apply, the bad ones are reported."""

    def __init__(self, kept, bad: list[str]):
        super().__init__("; ".join(bad))
        self.kept = kept


def _pages(v):
    if not isinstance(v, list):
        raise ValueError(f"must be a list of page names from {', '.join(PAGE_NAMES)}, got {v!r}")
    kept = tuple(dict.fromkeys(p for p in v if p in PAGE_NAMES and p != "home"))
    bad = []
    if unknown := [p for p in v if p not in PAGE_NAMES]:
        names, verb = ", ".join(map(repr, unknown)), "is" if len(unknown) == 1 else "are"
        bad.append(f"must be a list of page names from {', '.join(PAGE_NAMES)}; {names} {verb} not")
    if "home" in v:
        bad.append("cannot hide the home page: every other page may be hidden")
    if bad:
        raise _Partly(kept, bad)
    return kept


SETTINGS = {
    ("server", "data_root"): ("data_root", _text),
    ("server", "teacher_token"): ("teacher_token", _token),
    ("server", "localhost_is_teacher"): ("localhost_is_teacher", _bool),
    ("training", "enabled"): ("training", _bool),
    ("training", "max_concurrent"): ("max_concurrent", _count),
    ("training", "per_session"): ("per_session", _count),
    ("training", "max_steps"): ("max_train_steps", _count),
    ("sampling", "max_n"): ("max_n", _count),
    ("sampling", "max_steps"): ("max_steps", _count),
    ("pages", "hidden"): ("hidden_pages", _pages),
    ("cluster", "address"): ("cluster.address", _address),
    ("cluster", "num_cpus"): ("cluster.num_cpus", _cpus),
    ("cluster", "num_gpus"): ("cluster.num_gpus", _gpus),
    ("cluster", "code_dir"): ("cluster.code_dir", _text),
    ("cluster", "working_dir"): ("cluster.working_dir", _bool),
    ("cluster", "python"): ("cluster.python", _text),
}


def _parse(doc: dict) -> tuple[dict, list[str]]:
    values, problems = {}, []
    for section, table in doc.items():
        if section in ("defaults", "locked"):
            values[section], more = _widget_values(section, table)
            problems += more
            continue
        if not isinstance(table, dict) or section not in {s for s, _ in SETTINGS}:
            problems.append(f"[{section}] is not a section of the classroom file; ignored")
            continue
        for key, value in table.items():
            if (section, key) not in SETTINGS:
                problems.append(f"[{section}] {key} is not a setting; ignored")
                continue
            name, check = SETTINGS[section, key]
            target = values
            if name.startswith("cluster."):  # [cluster]'s keys fill one ClusterSettings
                target, name = values.setdefault("cluster", {}), name.removeprefix("cluster.")
            try:
                target[name] = check(value)
            except _Partly as e:  # one bad entry must not drop the good ones (e.g. leave Train unhidden)
                target[name] = e.kept
                problems.append(f"[{section}] {key} {e}; the other entries still apply")
            except ValueError as e:
                problems.append(f"[{section}] {key} {e}; ignored")
    return values, problems


def _scalar(value) -> bool:
    return isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value))


def _widget_values(section: str, table) -> tuple[dict, list[str]]:
    """[defaults.<page>] / [locked.<page>] tables of widget key → scalar, or a list of them for a multiselect.
    Whether a value fits its widget is only known on the page, which checks it (explorer.links) and reports a misfit
    there."""
    out, problems = {}, []
    if not isinstance(table, dict):
        return out, [f"[{section}] must hold one table per page, e.g. [{section}.forward]; ignored"]
    for page, keys in table.items():
        if page not in PAGE_NAMES or not isinstance(keys, dict):
            problems.append(f"[{section}.{page}] is not a page (pages: {', '.join(PAGE_NAMES)}); ignored")
            continue
        for key, value in keys.items():
            what = f"[{section}.{page}] {key} must be a number, a string, true/false or a list of them"
            if _scalar(value):
                out.setdefault(page, {})[key] = value
            elif not isinstance(value, list):
                problems.append(f"{what}, got {value!r}; ignored")
            elif bad := [v for v in value if not _scalar(v)]:
                # A multiselect's list keeps its good options; with none left the page's own default stands.
                if kept := [v for v in value if _scalar(v)]:
                    out.setdefault(page, {})[key] = kept
                rest = "the others still apply" if kept else "no entry left; ignored"
                problems.append(f"{what}, got {', '.join(map(repr, bad))} among them; {rest}")
            else:
                out.setdefault(page, {})[key] = value
    return out, problems
