"""BackdoorAlign's secret prompt: made with a cryptographic random source, kept owner-only, never logged.

The secret is a string of ``length`` tokens drawn uniformly (``secrets.randbelow``) from the tokenizer's
ordinary vocabulary (special tokens and tokens that do not decode to clean text are left out), decoded to
text. It is prefixed to the system prompt of the defender's safety examples during fine-tuning and to every
prompt at inference, through :class:`SecretPromptTemplate`.

Handling contract:
    * the secret is written only by :func:`write_secret`, to a file created with mode 0600 (owner read and
      write), never through a wider mode, and read back by :func:`read_secret`;
    * run records, configs, logs and reports hold only :func:`secret_fingerprint` (length and SHA-256);
    * ``repr`` of a :class:`SecretPromptTemplate` does not show the secret.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.errors import ConfigError, DataError
from defuse.models.tokenizer import usable_token_ids

SECRET_FILE = "secret_prompt.txt"


def random_secret(tokenizer, length: int) -> str:
    """A secret of ``length`` tokens drawn uniformly with :mod:`secrets` from :func:`usable_token_ids`.

    The tokens are decoded together; re-tokenising the text may give a slightly different count (BPE
    merges across token boundaries), which is also true of the reference implementation.

    Raises:
        ConfigError: when ``length`` < 1 or the tokenizer has no usable tokens.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError("secret_length", f"must be a positive number of tokens, got {length!r}")
    pool = usable_token_ids(tokenizer)
    if not pool:
        raise ConfigError("secret_length", "the tokenizer has no ordinary tokens to draw a secret from")
    ids = [pool[secrets.randbelow(len(pool))] for _ in range(length)]
    return tokenizer.decode(ids).strip()


def secret_fingerprint(secret: str, tokenizer=None) -> dict:
    """What may be recorded about a secret: its length (characters, tokens) and SHA-256. Never the text."""
    out = {"chars": len(secret), "sha256": hashlib.sha256(secret.encode("utf-8")).hexdigest()}
    if tokenizer is not None:
        out["tokens"] = len(tokenizer(secret, add_special_tokens=False).input_ids)
    return out


def write_secret(path: str | Path, secret: str) -> Path:
    """Write ``secret`` to a NEW file at ``path`` created with mode 0600 (the umask cannot widen it).

    Raises:
        DataError: when the file already exists or cannot be created.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise DataError(p, f"cannot create the secret file: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret.encode("utf-8"))
    finally:
        os.close(fd)
    return p


def read_secret(path: str | Path) -> str:
    """Read a secret written by :func:`write_secret`, refusing a file others can read or write.

    Raises:
        DataError: when the file is missing, empty, or group/other-accessible.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "secret prompt file not found")
    if stat.S_IMODE(p.stat().st_mode) & 0o077:
        raise DataError(p, "secret prompt file is readable or writable by others; chmod 600 it")
    text = p.read_text(encoding="utf-8")
    if not text:
        raise DataError(p, "secret prompt file is empty")
    return text


class SecretPromptTemplate(PromptTemplate):
    """A :class:`PromptTemplate` that puts the secret before the normal system prompt of every prompt.

    This is how a BackdoorAlign-defended model is served: generation and every evaluation go through it.
    Training uses the plain template; the safety examples carry the secret in their own ``system`` field
    (built with :meth:`secret_system`), so both render the identical text.
    """

    def __init__(self, base: PromptTemplate, secret: str):
        super().__init__(base.tokenizer, style=base.style, default_system=base.default_system)
        self._secret = secret

    def __repr__(self) -> str:
        return f"SecretPromptTemplate(style={self.style!r}, secret=<{len(self._secret)} chars>)"

    def secret_system(self, record: InstructionRecord) -> str:
        """The system prompt with the secret: the secret, one space, then the normal system prompt the row has
        without it (:meth:`~defuse.data.template.PromptTemplate.normal_system`: the scenario's, or the chat
        template's own default, which is kept, never replaced), in one system turn, as the reference lays it
        out (``{secret} You are a helpful assistant. ...``); the secret alone when there is none."""
        normal = self.normal_system(record)
        return self._secret if not normal else f"{self._secret} {normal}"

    def system_for(self, record: InstructionRecord) -> str | None:
        """Always the secret-prefixed system prompt."""
        return self.secret_system(record)
