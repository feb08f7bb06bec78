"""Campaign control: stop, re-notify, retract, cancel a "later" message (the message page's buttons).

Rules: POST only, with the session's CSRF token (``PageBase.form``); a message the viewer cannot
see is "not found"; who may act is decided by ``ivr.delivery.control`` (the one rule for web,
command line and phone), which audits a refusal; its reason is shown as a notice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ivr.archive.message_view import visible_message
from ivr.delivery.control import (
    CANCELLABLE, MAX_TEXT_CHARS, RUNNING, ControlError, cancel_message, live_retraction, may_control, renotify,
    retraction_text, stop_campaign, submit_retraction,
)
from ivr.directory.accounts import Viewer
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import CampaignStatus, MessageKind
from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase, PageError
from storage.models import Campaign, Message


def control_flags(s: Session, viewer: Viewer, message: Message) -> dict[str, Any]:
    """Which control buttons the message page shows this viewer (the handlers check again)."""
    actor = Actor(viewer.actor, viewer.person_id, viewer.is_admin)
    if not may_control(s, actor, message.id):
        return {}
    campaign = s.scalars(select(Campaign).where(Campaign.message_id == message.id)).first()
    retracted = campaign is not None and live_retraction(s, message.id) is not None
    return {
        "stop": campaign is not None and campaign.status in RUNNING,
        "renotify": campaign is not None and campaign.status is not CampaignStatus.SCHEDULED and not retracted,
        "cancel": campaign is None and message.status in CANCELLABLE,
        "retract": campaign is not None and message.kind is not MessageKind.CANCELLATION and not retracted,
        "retraction_text": retraction_text(message.bin.language.value),
        "max_chars": MAX_TEXT_CHARS,
    }


class ControlPages(PageBase):
    """The buttons that steer a message's delivery."""

    async def _act(self, request: Request, work: Callable[[Session, Actor, Message, dt.datetime], str]) -> Response:
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        await self.form(request)  # the CSRF token, nothing else
        actor = Actor(viewer.actor, viewer.person_id, viewer.is_admin)
        now = self.console.clock()

        def run(s: Session) -> str:
            message = visible_message(s, viewer, message_id)
            if message is None:
                raise PageError(404, "error_not_found")
            return work(s, actor, message, now)
        try:
            self.flash(request, await self.console.tx(run))
        except ControlError as exc:
            self.flash(request, str(exc), "warn")
        return RedirectResponse(f"/messages/{message_id}", 303)

    async def message_stop(self, request: Request) -> Response:
        """Stop the message's campaign: no new call starts, calls up finish."""
        lang = self.language(request)

        def work(s: Session, actor: Actor, message: Message, now: dt.datetime) -> str:
            campaign_id = _campaign_id(s, message)
            result = stop_campaign(s, campaign_id, actor, now)
            return tr("control_stopped", lang, confirmed=result.confirmed, members=result.members,
                      never=result.never_called)
        return await self._act(request, work)

    async def message_renotify(self, request: Request) -> Response:
        """Call again everyone who has not confirmed (a new round)."""
        lang = self.language(request)

        def work(s: Session, actor: Actor, message: Message, now: dt.datetime) -> str:
            result = renotify(s, _campaign_id(s, message), actor, now)
            return tr("control_renotified", lang, members=result.members, round=result.round)
        return await self._act(request, work)

    async def message_cancel(self, request: Request) -> Response:
        """Cancel a message before it goes."""
        lang = self.language(request)

        def work(s: Session, actor: Actor, message: Message, now: dt.datetime) -> str:
            cancel_message(s, message.id, actor, now)
            return tr("control_cancelled", lang)
        return await self._act(request, work)

    async def message_retract(self, request: Request) -> Response:
        """Send a retraction (the typed or prepared text) to those who received the message."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        form = await self.form(request)
        text = " ".join(str(form.get("text", "")).split()) or None
        if await self.console.tx(lambda s: visible_message(s, viewer, message_id)) is None:
            raise PageError(404, "error_not_found")
        actor = Actor(viewer.actor, viewer.person_id, viewer.is_admin)
        try:
            new_id = await asyncio.to_thread(submit_retraction, self.console.engine, self.console.desk.store,
                                             message_id, actor, text=text)
        except ControlError as exc:
            self.flash(request, str(exc), "warn")
            return RedirectResponse(f"/messages/{message_id}", 303)
        self.flash(request, tr("control_retracted", self.language(request), id=new_id))
        return RedirectResponse(f"/messages/{new_id}", 303)


def _campaign_id(s: Session, message: Message) -> int:
    campaign_id = s.scalar(select(Campaign.id).where(Campaign.message_id == message.id))
    if campaign_id is None:
        raise ControlError(f"message {message.id} has no delivery (yet)")
    return campaign_id
