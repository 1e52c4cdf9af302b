"""A pip-installed mailer works out of the box, the way a new user meets it.

The wheel is built from a copy of this checkout (`pip wheel --no-deps --no-build-isolation`, so
the build uses the setuptools of the test environment and fetches nothing), installed with
`pip --python VENV install --no-index --no-deps` into a fresh virtual environment in tmp_path,
outside the repository. The dependencies are not installed again: a `.pth` file added after
the install gives the new environment the test environment's site-packages (without running
that folder's own `.pth` files, so the repository's editable mailer stays out of sight). Then,
from a folder outside the repository, it runs `mailer init`, points the written settings at
the test IMAP server and SMTP sink, imports customers, processes a real request and sends a
campaign, with the confirmation and base templates coming from inside the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, CliResult, write_settings
from tests.servers import ImapTestServer, RawImap, SmtpSink, sample_message

# Everything in the checkout that is not source: environments, caches, build output, databases.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", "dist", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".hypothesis", "demo-run", "*.db", "*.db-wal", "*.db-shm",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    prefix: Path  # the fresh virtual environment

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def source(self) -> Path:
        """The copy of the checkout the wheel was built in (with what the build left)."""
        return self.prefix.parent / "source"

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
        """The installed `mailer` script, run in `cwd` with nothing pointing at the repo."""
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "MAILER_SETTINGS", "VIRTUAL_ENV")}
        result = subprocess.run([str(self.prefix / "bin" / "mailer"), *args], cwd=cwd,
                                capture_output=True, text=True, timeout=60,
                                env={**clean, **(env or {})})
        return CliResult(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(root / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (root / "dist").glob("mailer-*.whl")
    prefix = root / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(prefix)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(prefix / "bin" / "python"), "install",
         "--quiet", "--no-index", "--no-deps", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    (site_packages,) = prefix.glob("lib/python*/site-packages")
    paths = sysconfig.get_paths()
    dependencies = dict.fromkeys((paths["purelib"], paths["platlib"]))
    (site_packages / "test_environment_dependencies.pth").write_text(
        "".join(f"{path}\n" for path in dependencies), encoding="utf-8")
    return Installed(wheel, prefix)


def test_wheel_holds_every_module_the_default_templates_and_the_example_settings(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mailer").rglob("*.py")}
        assert modules - names == set()
        for template in (p for p in (ROOT / "templates").rglob("*") if p.is_file()):
            name = template.relative_to(ROOT / "templates").as_posix()
            assert wheel.read(f"mailer/default_templates/{name}") == template.read_bytes()
        assert wheel.read("mailer/example/settings.toml") == (ROOT / "settings.toml").read_bytes()


def test_what_building_the_wheel_leaves_in_a_checkout_is_ignored_by_git(
    installed: Installed,
) -> None:
    # pip builds in the source folder (build/, mailer.egg-info/): `pip install .` in a
    # checkout must not leave files `git status` then offers to commit.
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    top = {path.split("/", 1)[0] for path in tracked}
    untracked = sorted(p.name + "/" * p.is_dir() for p in installed.source.iterdir()
                       if p.name not in top)
    assert "build/" in untracked
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                             input="\n".join(untracked), capture_output=True, text=True)
    assert ignored.stdout.splitlines() == untracked


def test_installed_mailer_inits_imports_honours_a_request_and_sends_a_campaign_outside_the_repo(
    installed: Installed, tmp_path: Path, imap_server: ImapTestServer, raw_imap: RawImap,
    smtp_sink: SmtpSink,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # The mailer that runs, and the templates it ships, are the installed ones.
    found = subprocess.run(
        [str(installed.python), "-c", "import mailer, mailer.mail.templates as t; "
         "print(mailer.__file__); print(t.packaged_defaults())"],
        cwd=site, capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout.splitlines()
    assert all(Path(line).is_relative_to(installed.prefix) for line in found), found

    # A new user: init, then edit the settings to point at their servers.
    init = installed.run("init", cwd=site)
    assert init.code == 0, init.stderr
    settings = tomllib.loads((site / "settings.toml").read_text(encoding="utf-8"))
    settings["imap"].update(host=imap_server.host, port=imap_server.port, security="none",
                            username=imap_server.username, password=imap_server.password,
                            timeout_s=10.0)
    settings["smtp"].update(host=smtp_sink.host, port=smtp_sink.port, security="none",
                            timeout_s=10.0)
    write_settings(site / "settings.toml", settings)
    # They keep their own campaign and let the shipped base and confirmation serve the rest.
    for name in ("base.txt", "base.html", "confirmation.txt", "confirmation.html"):
        (site / "templates" / name).unlink()
    (site / "templates" / "campaigns" / "spring.txt").write_text(
        '{% extends "base.txt" %}\n{% block content %}\n'
        "Spring is here, {{ customer.name }}: free calls all April.\n{% endblock %}\n",
        encoding="utf-8")
    (site / "customers.csv").write_text(
        "name,email,offers\nAnn Lee,ann@example.com,yes\nBob Roe,bob@example.com,yes\n"
        "Carol Diaz,carol@example.com,yes\n", encoding="utf-8")

    imported = installed.run("customers", "import", "--consent", "opted-in", "customers.csv",
                             cwd=site)
    assert imported.code == 0, imported.stderr
    assert "3 created" in imported.stdout

    raw_imap.append_many("INBOX", [sample_message(
        subject="Unsubscribe special offers", sender="Ann Lee <ann@example.com>",
        to=settings["unsubscribe"]["address"], body="Please stop.\n")])
    secret = {"MAILER_SECRET": (site / "secret").read_text().strip()}  # what init wrote
    # The confirmation's link to the preference page is signed with the secret.
    processed = installed.run("inbox", "process", cwd=site, env=secret)
    assert processed.code == 0, processed.stderr
    assert "1 customer(s) unsubscribed" in processed.stdout
    (confirmation,) = smtp_sink.messages
    assert confirmation.rcpt_tos == ("ann@example.com",)
    assert b"Dear Ann Lee," in confirmation.content
    # The shipped confirmation.txt: the way back in is the signed preference-page link.
    assert b"Changed your mind? Choose the emails you want: " in confirmation.content
    assert b"Reply to this email" not in confirmation.content

    created = installed.run("campaign", "create", "--kind", "offers", "--template", "spring",
                            "--subject", "Spring offer for {{ customer.name }}", cwd=site,
                            env=secret)
    assert created.code == 0, created.stderr
    sent = installed.run("campaign", "send", created.stdout.strip(), cwd=site, env=secret)
    assert sent.code == 0, sent.stderr

    campaign = smtp_sink.messages[1:]
    assert sorted(m.rcpt_tos for m in campaign) == [("bob@example.com",), ("carol@example.com",)]
    for message in campaign:
        assert b"free calls all April" in message.content
        assert b"To stop receiving these emails" in message.content  # the shipped base.txt
    assert (site / "mailer.db").is_file()  # relative paths resolve beside the settings file
