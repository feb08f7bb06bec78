"""The console during ``binfoon demo``: an admin account drawn for the run, its password in a 0600 file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from storage.db import session_scope
from storage.models import Person, RoleAssignment
from ivr.domain.vocabulary import Language, Role

if TYPE_CHECKING:
    from ivr.app import BinfoonApp
    from ivr.web.server import WebConsole

DEMO_USER = "demo.admin"


async def demo_console(app: BinfoonApp, say: Callable[[str], None]) -> WebConsole | None:
    """Start the console on the demo's app; never fails the demo (it says why instead)."""
    from ivr.directory.accounts import create_account
    from ivr.web.server import WebStartError, start_web_console

    if app.settings.web_port == 0:
        return None
    password = secrets.token_urlsafe(12)
    secret = Path(app.settings.data_dir) / "web-password.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    with session_scope(app.engine) as s:
        admin = Person(name="Demo Beheerder", language=Language.NL)
        admin.roles.append(RoleAssignment(role=Role.ADMIN))
        s.add(admin)
        s.flush()
        create_account(s, admin.id, DEMO_USER, password, "demo")
    try:
        web = await start_web_console(app)
    except WebStartError:
        web = await start_web_console(app, port=0)  # the usual port is taken (binfoon serve?): any free one
    if web is not None:
        say(f"web console: {web.url} (sign in as {DEMO_USER}, password in {secret}; open while the demo runs)")
    return web
