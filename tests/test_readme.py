"""The README stays true: its Python tour runs, and its Quick start has exactly the two promised commands."""

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_api_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python block"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_quick_start_has_one_launch_and_one_test_command():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2
    launch, test = commands
    assert "pip install -r requirements.txt" in launch and "streamlit run explorer/app.py" in launch
    assert "pip install -r requirements-dev.txt" in test and "pytest" in test
    assert "<!-- test-command -->\n```bash\n" + test in quick  # the line .ci/run executes
