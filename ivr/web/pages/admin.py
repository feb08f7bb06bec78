"""The admin's tools (admins only): persons (list, details, edit, deactivate, roles, PIN reset and
unlock) and zones (settings, their BINs' one-level mode, their default channels per urgency and
contact ladder: each empty field means the setting, shown beside it).

Rules: every handler refuses anyone but an admin (403) before it reads anything, and the feature
(``ivr.directory.admin``) checks again and audits every change; every form is a POST with the
session's CSRF token; bad input shows the page again with the reason (400) and writes nothing.
A reset PIN is shown once, in the answer to the admin's own POST: never in a redirect, a URL, the
session cookie (signed, not encrypted), a log or the audit log; the page is not cached (no-store).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ivr.directory import admin
from ivr.directory.accounts import Viewer
from ivr.directory.pin_gate import rules_from_settings
from ivr.domain.actor import Actor
from ivr.domain.channels import format_channels, parse_channels
from ivr.domain.vocabulary import Escalation, ReviewMode, Role
from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase, PageError
from storage.models import utcnow

#: What the persons list can be filtered on (``state``: active, inactive or all).
STATES = ("active", "inactive", "all")
PERSON_ACTIONS = ("edit", "deactivate", "activate", "role_add", "role_remove", "unlock", "pin_reset")
#: The channel choices a zone's form offers, as ``format_channels`` writes them: every set with calls
#: (a zone's defaults always include them; text only is a member's own choice).
CHANNEL_CHOICES = ("voice", "voice+sms", "voice+email", "voice+sms+email")


def actor_of(viewer: Viewer) -> Actor:
    """The signed-in person as the features check permissions on them."""
    return Actor(viewer.actor, viewer.person_id, viewer.is_admin)


def _number(raw: str) -> int | None:
    """A whole number typed in a form (``None``: empty); ``ValueError`` otherwise."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError(raw)
    return int(raw)


class AdminPages(PageBase):
    """Persons and zones, for admins."""

    async def _admin(self, request: Request) -> Viewer:
        viewer = await self.viewer(request)
        if not viewer.is_admin:
            raise PageError(403, "error_forbidden")
        return viewer

    # -- persons ---------------------------------------------------------------------------------
    async def admin_people(self, request: Request) -> Response:
        """The persons list, filtered by role, BIN, zone and state (GET parameters, checked)."""
        viewer = await self._admin(request)
        lang = self.language(request)
        params = request.query_params
        raw = {k: params.get(k, "").strip()[:40] for k in ("role", "bin", "zone", "state")}
        errors = []
        role = None
        if raw["role"]:
            try:
                role = Role(raw["role"])
            except ValueError:
                errors.append(tr("admin_error_role", lang))
        try:
            bin_number = _number(raw["bin"])
        except ValueError:
            bin_number = None
            errors.append(tr("admin_error_bin", lang))
        state = raw["state"] or "active"
        if state not in STATES:
            errors.append(tr("admin_error_state", lang))
            state = "active"
        active = None if state == "all" else state == "active"
        people: list[admin.PersonRow] = []
        if not errors:
            try:
                people = await self.console.tx(lambda s: admin.list_people(
                    s, role=role, bin_number=bin_number, zone_code=raw["zone"] or None, active=active))
            except admin.AdminError as exc:
                errors.append(str(exc))
        return self.render(request, "admin_people.html", 400 if errors else 200, viewer=viewer, people=people,
                           filters={**raw, "state": state}, roles=[r.value for r in Role], states=STATES,
                           errors=errors)

    def _person_context(self, s: Session, person_id: int, now: dt.datetime) -> dict[str, Any]:
        try:
            details = admin.person_details(s, person_id, rules_from_settings(self.settings, pepper=False), now)
        except admin.AdminError:
            raise PageError(404, "error_not_found") from None
        return {"person": details, "roles": [r.value for r in Role], "zones": admin.list_zones(s)}

    async def admin_person(self, request: Request) -> Response:
        """One person: roles, masked numbers, accounts, PIN state, and the forms to change them."""
        viewer = await self._admin(request)
        person_id = int(request.path_params["id"])
        context = await self.console.tx(lambda s: self._person_context(s, person_id, utcnow()))
        return self.render(request, "admin_person.html", viewer=viewer, **context)

    async def admin_person_change(self, request: Request) -> Response:
        """One change to a person (``do``: edit, deactivate, activate, role_add, role_remove, unlock,
        pin_reset); a PIN reset answers with the page that shows the new PIN once."""
        viewer = await self._admin(request)
        person_id = int(request.path_params["id"])
        lang = self.language(request)
        form = await self.form(request)
        do = str(form.get("do", ""))
        if do not in PERSON_ACTIONS:
            raise PageError(400, "error_bad_request")
        actor = actor_of(viewer)
        field = {k: str(form.get(k, "")).strip()[:200] for k in ("name", "language", "role", "bin", "zone",
                                                                  "priority")}
        pepper: bytes | None = None
        if do == "pin_reset":
            from storage.pins import PepperError, load_pepper

            try:
                pepper = load_pepper(self.settings.pin_pepper_path)
            except PepperError as exc:  # the PIN would be hashed without it: refused, nothing written
                context = await self.console.tx(lambda s: self._person_context(s, person_id, utcnow()))
                return self.render(request, "admin_person.html", 500, viewer=viewer, errors=[str(exc)], **context)

        def change(s: Session) -> str | None:
            now = utcnow()
            if do == "edit":
                admin.edit_person(s, person_id, actor, name=field["name"], language=field["language"])
            elif do in ("deactivate", "activate"):
                admin.set_active(s, person_id, do == "activate", actor)
            elif do in ("role_add", "role_remove"):
                try:
                    role = Role(field["role"])
                    bin_number = _number(field["bin"])
                    priority = _number(field["priority"])
                except ValueError:
                    raise admin.AdminError(tr("admin_error_role_form", lang)) from None
                scope = {"bin_number": bin_number if role in admin.BIN_ROLES else None,
                         "zone_code": (field["zone"] or None) if role in admin.ZONE_ROLES else None}
                if do == "role_add":
                    admin.add_role(s, person_id, role, actor, priority=priority, **scope)
                else:
                    admin.remove_role(s, person_id, role, actor, **scope)
            elif do == "unlock":
                admin.unlock_pin(s, person_id, actor, now)
            else:
                return admin.reset_pin(s, person_id, actor, pepper, now)
            return None

        try:
            pin = await self.console.tx(change)
        except admin.AdminError as exc:
            context = await self.console.tx(lambda s: self._person_context(s, person_id, utcnow()))
            return self.render(request, "admin_person.html", 400, viewer=viewer, errors=[str(exc)], **context)
        if pin is not None:
            context = await self.console.tx(lambda s: self._person_context(s, person_id, utcnow()))
            return self.render(request, "admin_person.html", viewer=viewer, one_time_pin=pin, **context)
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/admin/people/{person_id}", 303)

    # -- zones -----------------------------------------------------------------------------------
    async def admin_zones(self, request: Request) -> Response:
        """Every zone with its settings."""
        viewer = await self._admin(request)
        return self.render(request, "admin_zones.html", viewer=viewer,
                           zones=await self.console.tx(admin.list_zones))

    def _zone_context(self, s: Session, code: str) -> dict[str, Any]:
        try:
            details = admin.zone_details(s, code)
        except admin.AdminError:
            raise PageError(404, "error_not_found") from None
        settings = self.settings
        return {"zone": details.zone, "bins": details.bin_rows, "police": details.police,
                "review_modes": [m.value for m in ReviewMode], "escalations": [e.value for e in Escalation],
                "channel_choices": CHANNEL_CHOICES,
                "setting": {"urgent_channels": format_channels(parse_channels(settings.copy_channels_urgent)),
                            "preventive_channels": format_channels(parse_channels(settings.copy_channels_preventive)),
                            "ladder_sms": settings.ladder_sms, "ladder_after_s": f"{settings.ladder_after_s:g}"}}

    async def admin_zone(self, request: Request) -> Response:
        """One zone: its settings form, with its BINs' one-level switches."""
        viewer = await self._admin(request)
        code = str(request.path_params["code"])[:32]
        return self.render(request, "admin_zone.html", viewer=viewer,
                           **await self.console.tx(lambda s: self._zone_context(s, code)))

    async def admin_zone_save(self, request: Request) -> Response:
        """Save a zone's settings and its BINs' one-level mode: all of it, or (with a reason) nothing."""
        viewer = await self._admin(request)
        code = str(request.path_params["code"])[:32]
        lang = self.language(request)
        form = await self.form(request)
        text = {k: str(form.get(k, "")).strip()[:200] for k in ("name", "max_channels", "max_cps",
                                                               "review_max_rounds", "review_mode",
                                                               "urgent_escalation", "urgent_channels",
                                                               "preventive_channels", "ladder_sms",
                                                               "ladder_after_s")}
        errors = []
        values: dict[str, Any] = {"name": text["name"], "review_mode": text["review_mode"],
                                  "urgent_escalation": text["urgent_escalation"],
                                  "second_approver": form.get("second_approver") == "on"}
        for key in ("max_channels", "review_max_rounds"):
            try:
                values[key] = _number(text[key])
            except ValueError:
                errors.append(tr("admin_error_whole_number", lang, field=tr(f"admin_zone_{key}", lang)))
        try:
            values["max_cps"] = float(text["max_cps"].replace(",", ".")) if text["max_cps"] else None
        except ValueError:
            errors.append(tr("admin_error_number", lang, field=tr("admin_zone_max_cps", lang)))
        # Empty: the setting applies. A choice that is none of the offered ones is refused by edit_zone.
        values["urgent_channels"] = text["urgent_channels"] or None
        values["preventive_channels"] = text["preventive_channels"] or None
        values["ladder_sms"] = {"": None, "yes": True, "no": False}.get(text["ladder_sms"], text["ladder_sms"])
        try:
            values["ladder_after_s"] = (float(text["ladder_after_s"].replace(",", "."))
                                        if text["ladder_after_s"] else None)
            if values["ladder_after_s"] is not None and not 0 <= values["ladder_after_s"] < math.inf:
                raise ValueError("not a number of seconds, 0 or more")
        except ValueError:
            errors.append(tr("admin_error_seconds", lang, field=tr("admin_zone_ladder_after_s", lang)))
        actor = actor_of(viewer)

        def save(s: Session) -> None:
            admin.edit_zone(s, code, actor, **values)
            for b in admin.zone_details(s, code).bin_rows:
                admin.set_one_level(s, b.number, form.get(f"one_level_{b.number}") == "on", actor)

        if not errors:
            try:
                await self.console.tx(save)
            except admin.AdminError as exc:
                errors.append(str(exc))
        if errors:
            context = await self.console.tx(lambda s: self._zone_context(s, code))
            return self.render(request, "admin_zone.html", 400, viewer=viewer, errors=errors, **context)
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/admin/zones/{code}", 303)
