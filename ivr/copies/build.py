"""The copies' composition: the gateways the settings configure, the desk, the sender, Kannel's callbacks.

A channel is on when its gateway is configured: SMS with ``sms_sendsms_url`` (Kannel's smsbox, its
password in ``sms_password_file``), e-mail with ``smtp_host`` (the relay, its password in
``smtp_password_file``). Without either there is no sender: no copy is planned or sent. Secrets come
from their 0600 files; a missing or readable-by-others one stops the start with a clear message.

The gateways' blocking I/O runs in threads of their own (``concurrency`` of them), not in the loop's
default executor: that one runs every database transaction of the service, and a relay that does not
answer (30 s per socket operation) would hold its threads while members' calls wait for the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from ivr.asterisk.secrets import read_secret_file
from ivr.config import Settings
from ivr.copies.callbacks import KannelCallbacks, callback_app
from ivr.copies.email import MailOrigin
from ivr.copies.kannel import KannelGateway, dlr_signer
from ivr.copies.sender import Composer, CopySender, SenderLimits
from ivr.copies.smtp import SmtpMailer
from ivr.copies.store import CopyDesk, CopyRules
from ivr.copies.tokens import load_copies_key
from storage.models import utcnow
from storage.recordings import RecordingStore


def build_copies(settings: Settings, engine: Engine, recordings: RecordingStore,
                 clock: Callable[[], dt.datetime] = utcnow, *, on_confirmed: Callable[[], None] | None = None,
                 limits: SenderLimits | None = None) -> CopySender | None:
    """The copy sender of ``settings`` (``None``: neither SMS nor e-mail is configured). ``on_confirmed``
    is told when a member's SMS reply confirmed a campaign (the dialer's ``wake``)."""
    if not settings.sms_sendsms_url and not settings.smtp_host:
        return None
    limits = limits or SenderLimits()
    key = load_copies_key(settings.copies_key_path)
    smtp_password = read_secret_file("smtp_password_file", settings.smtp_password_file) \
        if settings.smtp_host and settings.smtp_password_file else ""
    # One thread per hand-over at once (made when first needed); shut down by the sender's ``stop``.
    threads = ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="binfoon-copies")
    sms = KannelGateway.from_settings(settings, dlr_signer(key), executor=threads) \
        if settings.sms_sendsms_url else None
    mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_username,
                        smtp_password, settings.smtp_ca_file or None, executor=threads) \
        if settings.smtp_host else None
    desk = CopyDesk(engine, recordings, clock, CopyRules.from_settings(settings))
    composer = Composer(settings.caller_id_number, settings.sms_sender or settings.caller_id_number,
                        MailOrigin.from_settings(settings), key)
    sender = CopySender(desk, composer, sms=sms, mailer=mailer, limits=limits, clock=clock, executor=threads)
    if sms is not None and settings.sms_callback_port:
        sender.callbacks = KannelCallbacks(callback_app(desk, key, on_confirmed=on_confirmed, clock=clock),
                                           settings.sms_callback_port)
    return sender
