"""The lab's text network: a private Kannel (fake SMSCs) and a private SMTP relay, and the settings that
point the service at them, as a police zone's settings point it at Kannel and the zone's relay.

Used by the demo and by the tests: the service runs exactly as in production (its own sendsms account,
its password in a 0600 file, the callback listener on loopback, STARTTLS and AUTH towards the relay);
only the far ends (the SMSC, the mailboxes) are the lab's.

The callback port is drawn when the lab is made and Kannel is told it before the service listens there,
so it is reserved meanwhile: a socket bound to it with SO_REUSEADDR, never listening, held until
``stop``. No other process can bind the port then (nor does the kernel give it to an outgoing
connection), but the service's listener can: it binds with SO_REUSEADDR too
(``ivr.copies.callbacks.KannelCallbacks``), which Linux allows beside a bound socket that does not
listen. A service restarted during the lab (a crash test) finds its port still free.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Self

from ivr.copies.kannel import mo_token
from ivr.copies.tokens import load_copies_key
from ivr.lab.kannel import KannelLab
from ivr.lab.smtp import SmtpLab

#: The From address of the lab's e-mail copies.
LAB_EMAIL_FROM = "bin@politie.lab.invalid"


def reserve_port() -> socket.socket:
    """A loopback TCP port held for a listener that binds it with SO_REUSEADDR (see the module)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _secret_file(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    os.chmod(path, 0o600)
    return path


class CopiesLab:
    """Kannel and the SMTP relay for one service whose data lives in ``data_dir`` (its copies key is made
    there, so Kannel's reply URL carries the token the service checks)."""

    def __init__(self, data_dir: Path, *, refused_emails: frozenset[str] = frozenset()) -> None:
        self.data_dir = data_dir
        self._reservation: socket.socket | None = reserve_port()
        self.callback_port = int(self._reservation.getsockname()[1])
        self.key = load_copies_key(data_dir / "copies.key")
        self.kannel = KannelLab(f"http://127.0.0.1:{self.callback_port}", mo_token(self.key))
        self.smtp = SmtpLab(refused=refused_emails)

    def start(self) -> Self:
        """Start both (blocking: call it in a thread from a loop); a failure stops what started."""
        try:
            self.smtp.start()
            self.kannel.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both and give the callback port up (idempotent)."""
        self.kannel.stop()
        self.smtp.stop()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self) -> dict[str, Any]:
        """The settings that send the service's copies here (for ``dataclasses.replace``)."""
        secrets_dir = self.data_dir / "secrets"
        sms_password = _secret_file(secrets_dir / "kannel-sendsms.secret", self.kannel.password)
        smtp_password = _secret_file(secrets_dir / "smtp.secret", self.smtp.password)
        return {"sms_sendsms_url": self.kannel.sendsms_url, "sms_username": self.kannel.username,
                "sms_password_file": str(sms_password), "sms_callback_port": self.callback_port,
                "smtp_host": self.smtp.host, "smtp_port": self.smtp.port, "smtp_security": self.smtp.security,
                "smtp_username": self.smtp.username, "smtp_password_file": str(smtp_password),
                "smtp_ca_file": str(self.smtp.ca_file or ""), "email_from": LAB_EMAIL_FROM,
                "copies_key_file": str(self.data_dir / "copies.key")}

    def environment(self) -> dict[str, str]:
        """The same settings as ``BINFOON_*`` environment values (for ``binfoon serve`` in its own process)."""
        return {f"BINFOON_{key.upper()}": str(value) for key, value in self.settings().items()}
