"""Where a passphrase comes from: a file, an environment variable, or a terminal prompt.

Never a command-line value: that would land in shell history and in ``ps`` listings.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "ANONCLI_PASSPHRASE"
MIN_LENGTH = 8


class PassphraseUnavailable(Exception):
    pass


def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def obtain_passphrase(file: Path | None, *, confirm: bool, what: str = "keyfile") -> bytes:
    """The passphrase as bytes. ``confirm``: a new secret (prompted twice, length checked)."""
    if file is not None:
        try:
            secret = _strip_newline(Path(file).read_bytes())
        except OSError as e:
            raise PassphraseUnavailable(f"cannot read passphrase file {file}: {e.strerror or e}") from None
        source = f"passphrase file {file}"
    elif os.environ.get(ENV_VAR):
        secret, source = os.environ[ENV_VAR].encode("utf-8"), f"${ENV_VAR}"
    elif sys.stdin.isatty() and sys.stderr.isatty():
        import getpass

        secret = getpass.getpass(f"Passphrase for the {what}: ").encode("utf-8")
        if confirm and getpass.getpass("Repeat the passphrase: ").encode("utf-8") != secret:
            raise PassphraseUnavailable("the two passphrases differ")
        source = "prompt"
    else:
        raise PassphraseUnavailable(f"a passphrase is needed for the {what}: give --passphrase-file FILE, "
                                    f"set ${ENV_VAR}, or run in a terminal to be asked")
    if not secret:
        raise PassphraseUnavailable(f"the passphrase from {source} is empty")
    if confirm and len(secret) < MIN_LENGTH:
        raise PassphraseUnavailable(f"the passphrase from {source} is shorter than {MIN_LENGTH} characters")
    return secret
