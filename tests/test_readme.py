"""README tells a newcomer what `make test` does to their machine: the Debian packages that
scripts/setup-system.sh installs when run as root, every one of them by name."""

from __future__ import annotations

import re

from tests.helpers import ROOT


def test_readme_names_every_package_make_test_installs_as_root() -> None:
    script = (ROOT / "scripts" / "setup-system.sh").read_text(encoding="utf-8")
    packages = re.findall(r"need\+=\(([a-z0-9.+-]+)\)", script)
    assert packages  # the script's convention: need+=(PACKAGE) for each missing program
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("`make test` first runs `scripts/setup-system.sh`"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    assert "root" in paragraph
    assert [p for p in packages if f"`{p}`" not in paragraph] == []
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "bash scripts/setup-system.sh" in makefile.split("\ntest:", 1)[1].split("\n\n")[0]
