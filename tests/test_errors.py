"""The one exception tree: every error class is imported from `mailer.errors` and nowhere else.

A re-export (`from mailer.errors import X as X` in another module, then `from mailer.mail.smtp
import X`) gives one class two addresses; readers then cannot tell where an error belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mailer import errors
from tests.helpers import ROOT

ERROR_NAMES = frozenset(
    name for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, BaseException)
    and value.__module__ == errors.__name__
)


def sources() -> list[Path]:
    return sorted(p for folder in ("mailer", "tests", "bench", "scripts")
                  for p in (ROOT / folder).rglob("*.py"))


def misplaced_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: what` for every error class reached other than through mailer.errors."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: set[str] = set()  # local names bound to a mailer module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mailer"):
            for alias in node.names:
                if node.module != "mailer.errors":
                    modules.add(alias.asname or alias.name)
                    if alias.name in ERROR_NAMES:
                        found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                elif alias.asname == alias.name:
                    found.append(f"{node.lineno}: re-exports {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mailer.") and alias.name != "mailer.errors":
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ERROR_NAMES
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    rel = path.relative_to(root).as_posix()
    return [f"{rel}:{line}" for line in found]


def test_the_error_tree_names_the_classes_every_module_uses() -> None:
    assert {"MailerError", "SettingsError", "StoreError", "SmtpError", "ImapError",
            "TemplateError"} <= ERROR_NAMES


def test_no_module_imports_an_error_class_from_anywhere_but_mailer_errors() -> None:
    misplaced = [line for path in sources() for line in misplaced_imports(path)]
    assert misplaced == []


def test_the_scan_finds_an_error_imported_through_another_module(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from mailer.mail import smtp\n"
                      "from mailer.settings import SettingsError\n"
                      "from mailer.errors import StoreError as StoreError\n"
                      "x = smtp.SmtpError\n")
    assert misplaced_imports(sample, tmp_path) == [
        "sample.py:2: from mailer.settings import SettingsError",
        "sample.py:3: re-exports StoreError",
        "sample.py:4: smtp.SmtpError",
    ]
