"""The README is the front door: its quickstart is what CI runs, literally."""

from __future__ import annotations

import re

from conftest import REPO


def commands(lines) -> list[str]:
    """Shell commands without comments or blank lines."""
    out = []
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_ci_runs_the_readme_quickstart_literally():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    ci = (REPO / ".ci" / "run").read_text()
    quick = ci.split("# --- README quickstart", 1)[1].split("# --- end of quickstart", 1)[0]
    assert commands(block.splitlines()) == commands(quick.splitlines()[1:])
