"""BINs and their members: the list, one BIN (edit, CSV import, add a member), one member (edit, test call).

Rules: a BIN or member outside the viewer's scope is "not found"; only admins and the BIN's own
coordinators change its members ("forbidden" otherwise); a BIN's name (read back to officers) and
streets (which steer alerts sent by street) are the admins' alone: a coordinator's form does not offer
them and a request carrying them is forbidden, with nothing written; a form with bad input is shown
again with every message and nothing is written; every change is audited by the directory; numbers
must pass the destination policy (``Settings.destinations``); test calls are limited per member and
per signed-in person (``TestCallLog``; an alert for the admins when refused); a drill of the whole
BIN (the "Testbericht BIN-foon") is started by its coordinators and admins (checked again by the
drill feature, ``ivr.delivery.drill``), and the page shows the latest drills' reach reports.
A member's channels are ticked boxes (none: their zone's defaults, shown beside them); a choice the
member cannot receive (SMS without a mobile number, e-mail without an address) is refused; their
opt-outs are shown read-only, and an editor may take them back in on one channel (audited).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ivr.delivery.drill import DrillError, DrillRefused, ReachReport, latest_drills, reach_report, start_drill
from ivr.directory.accounts import Viewer
from ivr.directory.test_calls import last_result
from ivr.domain.actor import Actor
from ivr.directory.member_csv import LANGUAGES as CSV_LANGUAGES
from ivr.directory.member_import import (
    IMPORT_MODES,
    CsvImportError,
    ImportPlan,
    ImportResult,
    MemberRow,
    apply_member_import,
    parse_member_csv,
    plan_member_import,
)
from ivr.directory.store import (
    Household,
    add_member,
    bin_in_scope,
    bin_overview,
    bin_with_members,
    clear_opt_out,
    edit_bin,
    member_contact,
    member_in_scope,
    open_member,
    phone_taken,
    save_member,
    unreachable_channels,
    zone_channel_defaults,
)
from ivr.domain.channels import ORDER as CHANNEL_ORDER
from ivr.domain.channels import check_email, format_channels
from ivr.domain.destinations import DestinationPolicy, TestCallLog
from ivr.domain.phone import InvalidPhoneNumber, mask
from ivr.web.console import Console
from ivr.web.i18n import tr
from ivr.web.pages.base import UPLOAD_OVERHEAD_BYTES, BodyTooLarge, PageBase, PageError
from ivr.web.test_calls import ConsoleUnavailable
from storage import audit
from storage.models import Bin, Person
from ivr.domain.vocabulary import Channel, Language

log = logging.getLogger(__name__)

#: How many of a BIN's latest drills its page reports.
DRILLS_SHOWN = 3


def _removing(plan: ImportPlan) -> str:
    """The people a replace import would remove, as the confirmation form carries them (``"4,9"``)."""
    return ",".join(str(m.person_id) for m in sorted(plan.removed, key=lambda m: m.person_id or 0))


#: The fields of a member household's form (and ``channels``: a box per ticked channel).
MEMBER_FIELDS = ("name", "phone", "second_phone", "street", "language", "email")


def _member_values(form: Any) -> dict[str, str]:
    """A member form's values, spaces tidied; ``channels`` as stored ("voice+sms"; ``""``: none ticked,
    the zone's defaults). A box that is no channel is ignored, like a field the form does not have."""
    values = {k: " ".join(str(form.get(k, "")).split()) for k in MEMBER_FIELDS}
    ticked = {str(v) for v in form.getlist("channels")}
    values["channels"] = format_channels(frozenset(c for c in CHANNEL_ORDER if c.value in ticked))
    return values


class BinPages(PageBase):
    """The BINs list, a BIN's page and its changes, a member's page and theirs."""

    def __init__(self, console: Console, secret_key: str) -> None:
        super().__init__(console, secret_key)
        # In memory: a restart forgets the last hour's test calls (the audit log keeps every one).
        self.test_call_log = TestCallLog(self.settings.test_calls_per_member_hour,
                                         self.settings.test_calls_per_person_hour)

    async def bins(self, request: Request) -> Response:
        """The BINs the viewer sees, with zone, streets and member count."""
        viewer = await self.viewer(request)
        return self.render(request, "bins.html", viewer=viewer,
                           bins=await self.console.tx(lambda s: bin_overview(s, viewer)))

    @staticmethod
    def _bin(s: Session, viewer: Viewer, number: int) -> Bin:
        bin_ = bin_in_scope(s, viewer, number)
        if bin_ is None:
            raise PageError(404, "error_not_found")
        return bin_

    def _bin_context(self, viewer: Viewer, number: int) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            bin_ = self._bin(s, viewer, number)
            defaults = zone_channel_defaults(bin_.zone, self.settings)
            return {**bin_with_members(s, viewer, bin_),
                    "default_channels": {u.value: format_channels(c) for u, c in defaults.items()}}

        context = self.console.run(work)
        context["identity_editable"] = viewer.is_admin
        context["drills"] = self.console.run(lambda s: _drill_reports(s, number))
        return context

    def _bin_page(self, request: Request, viewer: Viewer, status: int, context: dict[str, Any],
                  **errors: Any) -> Response:
        """The BIN's page again, with what was wrong (no test call results: the page is about the form)."""
        return self.render(request, "bin.html", status, viewer=viewer, test_calls={},
                           can_call=self.console.app is not None, **errors, **context)

    async def bin_page(self, request: Request) -> Response:
        """One BIN: its details, members (numbers masked), CSV import, test calls."""
        viewer = await self.viewer(request)
        context = await asyncio.to_thread(self._bin_context, viewer, int(request.path_params["number"]))
        return self.render(request, "bin.html", viewer=viewer, test_calls=self.console.test_results(),
                           can_call=self.console.app is not None, **context)

    async def bin_drill(self, request: Request) -> Response:
        """A drill of the whole BIN now (its coordinators and admins): the service calls every member."""
        viewer, number = await self._editable_bin(request)
        await self.form(request)  # the CSRF token, nothing else
        lang = self.language(request)
        who = Actor(viewer.actor, viewer.person_id, viewer.is_admin)
        try:
            message_id = await asyncio.to_thread(start_drill, self.console.engine, self.console.desk.store, number,
                                                 who, clock=self.console.clock)
        except DrillRefused:
            raise PageError(403, "error_forbidden") from None
        except DrillError as exc:
            self.flash(request, str(exc), "error")
            return RedirectResponse(f"/bins/{number}", 303)
        self.flash(request, tr("drill_started", lang, id=message_id))
        return RedirectResponse(f"/bins/{number}", 303)

    async def _editable_bin(self, request: Request) -> tuple[Viewer, int]:
        viewer = await self.viewer(request)
        number = int(request.path_params["number"])
        bin_id = await self.console.tx(lambda s: self._bin(s, viewer, number).id)
        if not viewer.may_edit_members(bin_id):
            raise PageError(403, "error_forbidden")
        return viewer, number

    async def bin_edit(self, request: Request) -> Response:
        """Language of a BIN; for admins also its name and streets (coordinators: forbidden)."""
        viewer, number = await self._editable_bin(request)
        form = await self.form(request)
        lang = self.language(request)
        identity = "name" in form or "streets" in form
        if identity and not viewer.is_admin:
            # The name is read back to officers and the streets choose who gets an alert sent by street.
            raise PageError(403, "error_forbidden")
        language = str(form.get("language", ""))
        name: str | None = None
        streets: list[str] | None = None
        errors = []
        if identity:
            name = " ".join(str(form.get("name", "")).split())
            streets = list(dict.fromkeys(" ".join(line.split()) for line in str(form.get("streets", "")).splitlines()
                                         if line.strip()))
            if not name:
                errors.append(tr("bin_error_name", lang))
        if language not in ("nl", "fr", "de"):
            errors.append(tr("error_language", lang))
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self._bin_page(request, viewer, 400, context, errors=errors)
        await self.console.tx(lambda s: edit_bin(s, self._bin(s, viewer, number), name, Language(language), streets,
                                                 viewer.actor))
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{number}", 303)

    async def members_import(self, request: Request) -> Response:
        """Import a BIN's members from a CSV file: the command line's parser and its line-numbered errors.

        ``merge`` (the default) adds and updates; ``replace`` also removes whoever is not in the file,
        but only once the coordinator ticked a box under the list of exactly those people (the file is
        chosen again, as on the send page): nothing is written before that. A number that belongs to
        another member is refused with its line, like a parse error."""
        viewer, number = await self._editable_bin(request)
        lang = self.language(request)
        limit = self.settings.web_upload_max_bytes
        length = request.headers.get("content-length", "")
        errors: list[str] = []
        data = b""
        form = None
        if not (length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD_BYTES):
            try:
                form = await self.form(request, limit + UPLOAD_OVERHEAD_BYTES)
            except BodyTooLarge:
                pass
        mode = "merge"
        if form is None:
            errors.append(tr("send_error_too_big", lang, mb=limit // 1_000_000))
        else:
            mode = str(form.get("mode") or "merge")
            if mode not in IMPORT_MODES:
                errors.append(tr("import_error_mode", lang))
            upload = form.get("file")
            if not isinstance(upload, UploadFile) or not upload.filename:
                errors.append(tr("import_error_no_file", lang))
            else:
                data = await upload.read(self.settings.web_upload_max_bytes + 1)
                if len(data) > self.settings.web_upload_max_bytes:
                    errors.append(tr("send_error_too_big", lang, mb=self.settings.web_upload_max_bytes // 1_000_000))
        rows: list[MemberRow] = []
        if not errors:
            try:
                rows = await asyncio.to_thread(parse_member_csv, data, self.settings.destinations)
            except CsvImportError as exc:
                errors = [tr("import_refused", lang, count=len(exc.errors))] + [str(e) for e in exc.errors]
        # The confirmation names the people it was given for: if the plan now removes others (the
        # list or the file changed meanwhile), it confirms nothing.
        confirming = form is not None and "removing" in form
        confirmed = form is not None and confirming and form.get("confirm_remove") == "yes"
        shown = str(form.get("removing", "")) if form is not None else ""

        def work(s: Session) -> tuple[ImportPlan, ImportResult | None]:
            bin_ = self._bin(s, viewer, number)
            plan = plan_member_import(s, bin_, rows, mode)
            if plan.removed and not (confirmed and shown == _removing(plan)):
                return plan, None  # nothing written: the coordinator confirms first
            return plan, apply_member_import(s, bin_, rows, plan, viewer.actor)

        if not errors:
            try:
                plan, result = await self.console.tx(work)
            except CsvImportError as exc:
                errors = [tr("import_refused", lang, count=len(exc.errors))] + [str(e) for e in exc.errors]
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self._bin_page(request, viewer, 400, context, import_errors=errors)
        if result is None:
            if not confirming:
                confirm_errors = []
            elif not confirmed:
                confirm_errors = [tr("import_error_confirm", lang)]
            else:
                confirm_errors = [tr("import_confirm_changed", lang)]
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            confirm = {"mode": plan.mode, "removing": _removing(plan), "errors": confirm_errors,
                       "removed": [{"name": m.name, "phone": mask(m.phone)} for m in plan.removed]}
            return self._bin_page(request, viewer, 400 if confirm_errors else 200, context, import_confirm=confirm)
        self.flash(request, tr("import_done", lang, added=result.added, updated=result.updated,
                               removed=result.removed, count=len(rows)))
        kept = [m.name for m in plan.reused if m.not_applied]
        if kept:  # people already in the directory keep their own channels or address: say so
            self.flash(request, tr("import_not_applied", lang, names=", ".join(kept)), "warn")
        return RedirectResponse(f"/bins/{number}", 303)

    @staticmethod
    def _member_context(s: Session, viewer: Viewer, person_id: int) -> tuple[Person, Bin]:
        found = member_in_scope(s, viewer, person_id)
        if found is None:
            raise PageError(404, "error_not_found")
        return found

    def _editable_member(self, s: Session, viewer: Viewer, person_id: int) -> tuple[Person, Bin]:
        person, bin_ = self._member_context(s, viewer, person_id)
        if not viewer.may_edit_members(bin_.id):
            raise PageError(403, "error_forbidden")
        return person, bin_

    async def member_page(self, request: Request) -> Response:
        """Edit one member household (full numbers shown to editors: audited)."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])

        def work(s: Session) -> dict[str, Any]:
            person, bin_ = self._editable_member(s, viewer, person_id)
            return {**open_member(s, person, bin_, viewer.actor, self.settings),
                    "last_test_call": last_result(s, person_id)}

        return self.render(request, "member.html", viewer=viewer, **await self.console.tx(work))

    async def member_save(self, request: Request) -> Response:
        """Save a member's name, numbers, street, language, channels and e-mail address; bad input writes
        nothing. The opt-out buttons post here too (``clear_opt_out``: the channel), alone."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])
        lang = self.language(request)
        bin_ = await self.console.tx(lambda s: self._editable_member(s, viewer, person_id)[1])
        form = await self.form(request)
        if "clear_opt_out" in form:
            return await self._clear_opt_out(request, viewer, person_id, str(form.get("clear_opt_out")))
        values = _member_values(form)
        errors, phone, second = self._member_errors(values, lang, self.settings.destinations)
        if not errors and await self.console.tx(
                lambda s: any(phone_taken(s, bin_.id, n, person_id) for n in (phone, second) if n)):
            errors.append(tr("member_error_phone_taken", lang, bin=bin_.number))
        if errors:
            def contact(s: Session) -> dict[str, Any]:
                person, found = self._editable_member(s, viewer, person_id)
                return member_contact(person, found, self.settings)

            return self.render(request, "member.html", 400, viewer=viewer, errors=errors,
                               member={"id": person_id, **values}, bin={"number": bin_.number, "name": bin_.name},
                               **await self.console.tx(contact))
        household = self._household(values, phone, second)
        await self.console.tx(lambda s: save_member(s, person_id, household, viewer.actor))
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{bin_.number}", 303)

    async def member_add(self, request: Request) -> Response:
        """Add one member household to a BIN."""
        viewer, number = await self._editable_bin(request)
        lang = self.language(request)
        form = await self.form(request)
        values = _member_values(form)
        errors, phone, second = self._member_errors(values, lang, self.settings.destinations)
        if not errors and await self.console.tx(
                lambda s: any(phone_taken(s, self._bin(s, viewer, number).id, n) for n in (phone, second) if n)):
            # The import keys households by their first number: one number, one household.
            errors.append(tr("member_error_phone_taken", lang, bin=number))
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self._bin_page(request, viewer, 400, context, member_errors=errors, new_member=values)
        household = self._household(values, phone, second)
        await self.console.tx(lambda s: add_member(s, self._bin(s, viewer, number), household, viewer.actor))
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{number}", 303)

    async def _clear_opt_out(self, request: Request, viewer: Viewer, person_id: int, raw: str) -> Response:
        """An editor takes the member back in on one channel they opted out of (audited by the directory)."""
        try:
            channel = Channel(raw)
        except ValueError:
            raise PageError(400, "error_bad_request") from None

        def work(s: Session) -> bool:
            person, _bin = self._editable_member(s, viewer, person_id)
            return clear_opt_out(s, person, channel, viewer.actor)

        lang = self.language(request)
        if await self.console.tx(work):
            self.flash(request, tr("member_opt_out_cleared", lang, channel=tr(f"channel_{channel.value}", lang)))
        return RedirectResponse(f"/members/{person_id}", 303)

    @staticmethod
    def _household(values: dict[str, str], phone: str, second: str | None) -> Household:
        email = check_email(values["email"]) if values["email"] else None
        return Household(values["name"], values["street"] or None, CSV_LANGUAGES[values["language"]], phone, second,
                         values["channels"] or None, email)

    @staticmethod
    def _member_errors(values: dict[str, str], lang: str,
                       destinations: DestinationPolicy) -> tuple[list[str], str, str | None]:
        errors = []
        phone, second = "", None
        if not values["name"]:
            errors.append(tr("member_error_name", lang))
        try:
            phone = destinations.dialable(values["phone"])
        except InvalidPhoneNumber as exc:
            errors.append(tr("member_error_phone", lang, why=str(exc)))
        if values["second_phone"]:
            try:
                second = destinations.dialable(values["second_phone"])
            except InvalidPhoneNumber as exc:
                errors.append(tr("member_error_second_phone", lang, why=str(exc)))
        if second is not None and second == phone:
            errors.append(tr("member_error_same_phone", lang))
        if values["language"] not in CSV_LANGUAGES:
            errors.append(tr("error_language", lang))
        email = None
        if values["email"]:
            try:
                email = check_email(values["email"])
            except ValueError:
                errors.append(tr("member_error_email", lang))
        if not errors:
            unreachable = unreachable_channels(values["channels"] or None, (phone, second), email)
            if Channel.SMS in unreachable:
                errors.append(tr("member_error_sms_no_mobile", lang))
            if Channel.EMAIL in unreachable:
                errors.append(tr("member_error_email_no_address", lang))
        return errors, phone, second

    async def member_test_call(self, request: Request) -> Response:
        """Call one member with the spoken test message (the start of a BIN)."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])
        lang = self.language(request)

        def check(s: Session) -> tuple[int, str]:
            person, bin_ = self._editable_member(s, viewer, person_id)
            return bin_.number, person.name

        number, name = await self.console.tx(check)
        await self.form(request)
        now = self.now()
        # Counted before the call is placed (no await in between): parallel requests see each other.
        limited = self.test_call_log.claim(person_id, viewer.actor, now)
        if limited is not None:
            limit = (self.settings.test_calls_per_member_hour if limited == "member"
                     else self.settings.test_calls_per_person_hour)
            log.warning("SECURITY: test call to person %d refused for %s: %d an hour per %s", person_id,
                        viewer.actor, limit, limited)
            await self.console.tx(lambda s: audit.record(s, "system", "security.alert", f"person:{person_id}",
                                                         kind="test-call-limit", by=viewer.actor, per=limited,
                                                         limit=limit))
            self.flash(request, tr(f"test_call_limit_{limited}", lang, limit=limit), "warn")
            return RedirectResponse(f"/bins/{number}", 303)
        try:
            await self.console.test_call(viewer, person_id)
        except (ConsoleUnavailable, InvalidPhoneNumber, LookupError) as exc:
            self.test_call_log.release(person_id, viewer.actor, now)  # no call was placed
            if isinstance(exc, ConsoleUnavailable):
                self.flash(request, tr("test_call_unavailable", lang), "warn")
            elif isinstance(exc, InvalidPhoneNumber):  # a number stored before the destination policy
                self.flash(request, tr("test_call_barred", lang, name=name, why=str(exc)), "warn")
            else:
                self.flash(request, tr("test_call_no_phone", lang, name=name), "warn")
        except BaseException:
            self.test_call_log.release(person_id, viewer.actor, now)
            raise
        else:
            self.flash(request, tr("test_call_started", lang, name=name))
        return RedirectResponse(f"/bins/{number}", 303)


def _drill_reports(s: Session, bin_number: int) -> list[ReachReport]:
    """The reach reports of the BIN's latest drills, newest first."""
    return [reach_report(s, message_id) for message_id in latest_drills(s, bin_number, DRILLS_SHOWN)]
