"""`mailer init [DIR]`: a new installation's starting files, never over existing ones.

Writes the documented example `settings.toml` (the repository's own, shipped in the package as
`mailer/example/settings.toml`), a `templates/` folder holding copies of the packaged
default templates to customise (`mailer.mail.templates.packaged_defaults`), and `secret`: a
new campaign secret (32 random bytes, URL-safe base64), readable by its owner only (0600),
for `MAILER_SECRET` or the unit's `LoadCredential=secret:` file. Every target is checked
before anything is written: if one exists, the command names it on one line, exits 2 and
writes nothing.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import click

from mailer.errors import BadInput
from mailer.mail.templates import packaged_defaults

_PACKAGE = Path(__file__).resolve().parents[1]  # the `mailer` package
SECRET_FILE = "secret"


def example_settings() -> Path:
    """The commented example settings file: inside the installed package (a wheel), else the
    repository's own beside the package (a source checkout, an editable install)."""
    installed = _PACKAGE / "example" / "settings.toml"
    if installed.is_file():
        return installed
    return _PACKAGE.parent / "settings.toml"


@dataclass(frozen=True)
class Copy:
    source: Path
    target: Path


def plan(directory: Path) -> list[Copy]:
    """What `init` writes into ``directory``: settings.toml, then templates/ file by file.

    Raises BadInput naming the first target (or a folder on its way) that already exists.
    """
    defaults = packaged_defaults()
    copies = [Copy(example_settings(), directory / "settings.toml")]
    copies += [
        Copy(source, directory / "templates" / source.relative_to(defaults))
        for source in sorted(defaults.rglob("*"))
        if source.is_file() and "__pycache__" not in source.parts
    ]
    if directory.exists() and not directory.is_dir():
        raise BadInput(f"{directory}: exists and is not a folder (nothing was written)")
    for target in [copy.target for copy in copies] + [directory / SECRET_FILE]:
        if target.exists() or target.is_symlink():
            raise BadInput(f"{target}: already exists; mailer init overwrites nothing "
                           "(nothing was written)")
        for folder in target.relative_to(directory).parents:
            if (directory / folder).exists() and not (directory / folder).is_dir():
                raise BadInput(f"{directory / folder}: exists and is not a folder "
                               "(nothing was written)")
    return copies


def write(copies: list[Copy]) -> None:
    for copy in copies:
        copy.target.parent.mkdir(parents=True, exist_ok=True)
        # "x": even a file created since the check is never overwritten.
        with copy.target.open("xb") as out:
            out.write(copy.source.read_bytes())


def write_secret(path: Path) -> None:
    """A new secret in `path`, created 0600 (never over an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(32) + "\n")


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


@click.command("init")
@click.argument("directory", default=".", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Write a commented settings.toml and a templates/ folder to customise into DIRECTORY
    (default: the current folder). Overwrites nothing."""
    copies = plan(directory)
    try:
        write(copies)
        write_secret(directory / SECRET_FILE)
    except OSError as exc:
        raise BadInput(f"{exc.filename}: {exc.strerror}") from exc
    settings_file = copies[0].target
    templates = directory / "templates"
    click.echo(f"wrote {_shown(settings_file)}")
    click.echo(f"wrote {_shown(templates)}/ ({len(copies) - 1} templates):")
    for copy in copies[1:]:
        click.echo(f"  {copy.target.relative_to(templates).as_posix()}")
    secret_file = _shown(directory / SECRET_FILE)
    click.echo(f"wrote {secret_file} (a new campaign secret, readable by you only)")
    here = directory.resolve() == Path.cwd().resolve()
    settings_option = "" if here else f" --settings {_shown(settings_file)}"
    click.echo(f"""
Next steps:
  1. Edit {_shown(settings_file)}: [imap], [smtp], [unsubscribe] address, [campaigns].
     Passwords may come from MAILER_IMAP_PASSWORD and MAILER_SMTP_PASSWORD; the secret
     comes from MAILER_SECRET:  export MAILER_SECRET="$(cat {secret_file})"
     (under systemd: install -m 0600 {secret_file} /etc/mailer/credentials/secret).
  2. Change what you want in {_shown(templates)}/ and delete the rest: a template that is
     not there comes from those shipped with mailer. Campaigns: campaigns/NAME.txt (.html).
  3. mailer{settings_option} customers import customers.csv
  4. mailer{settings_option} inbox process   (one pass; `mailer run` is the daemon)""")
