"""``binfoon message send|show|list|cancel|retract``: written messages, where every message stands,
and the brakes (``ivr.delivery.control``: one permission rule for the command line, web and phone)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from sqlalchemy import Engine, select

from ivr.commands.campaign import acting
from ivr.commands.common import CommandError, actor
from ivr.delivery.control import ControlError, cancel_message, submit_retraction
from ivr.config import Settings
from ivr.directory.store import bin_by_number
from ivr.media.tts import synthesize
from ivr.police_line.latest import latest_messages
from ivr.police_line.store import STATUS_TEXT, MessageDesk, describe
from ivr.police_line.written import MAX_TEXT_CHARS, may_follow_up
from storage.db import open_database, session_scope
from storage.models import RoleAssignment
from ivr.domain.vocabulary import MessageKind, Role, Urgency
from storage.recordings import RecordingStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``message`` commands."""
    messages = sub.add_parser("message", help="police messages").add_subparsers(dest="action", required=True)
    p = messages.add_parser("send", help="send a written message: it is spoken and goes to the coordinators")
    p.add_argument("--bin", type=int, required=True, help="BIN number")
    urgency = p.add_mutually_exclusive_group(required=True)
    urgency.add_argument("--urgent", action="store_true", help="dringend (red)")
    urgency.add_argument("--preventive", action="store_true", help="preventief (green)")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the message")
    text.add_argument("--text-file", type=Path, help="a UTF-8 file holding the message")
    p.add_argument("--follow-up-of", type=int, metavar="ID",
                   help="an update of message ID: it goes only to the members who received that one")
    p.add_argument("--cancellation", action="store_true", help="with --follow-up-of: it cancels message ID")
    p.add_argument("--as", dest="who", metavar="person:ID",
                   help="the message's author (a police officer or admin; checked and recorded)")
    p.set_defaults(func=cmd_send)
    p = messages.add_parser("cancel", help="cancel a message before it goes (a \"later\" one, or one still "
                                           "with the coordinators)")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="who", metavar="person:ID", help="on whose behalf (checked and audited)")
    p.set_defaults(func=cmd_cancel)
    p = messages.add_parser("retract", help="send a retraction to exactly the members who received message ID "
                                            "(no review: it goes at once)")
    p.add_argument("id", type=int)
    words = p.add_mutually_exclusive_group()
    words.add_argument("--text", help="the words (default: the prepared \"Vergeet het vorige bericht ...\")")
    words.add_argument("--audio", type=Path, metavar="FILE.wav", help="a recording to send instead")
    p.add_argument("--as", dest="who", metavar="person:ID", help="on whose behalf (checked and audited)")
    p.set_defaults(func=cmd_retract)
    p = messages.add_parser("show", help="where a message stands")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_show)
    p = messages.add_parser("list", help="the latest messages")
    p.add_argument("--bin", type=int)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)


def _message_text(args: argparse.Namespace) -> str:
    if args.text_file is not None:
        try:
            raw = args.text_file.read_bytes()
        except OSError as exc:
            raise CommandError(f"{args.text_file}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise CommandError(f"{args.text_file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    else:
        text = args.text
    text = " ".join(text.split())
    if not text:
        raise CommandError("the message is empty: give the words to speak")
    if len(text) > MAX_TEXT_CHARS:
        raise CommandError(f"the message has {len(text)} characters; at most {MAX_TEXT_CHARS} can be spoken")
    return text


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    """Speak the text in the BIN's language, store it as the message's recording, submit it."""
    text = _message_text(args)
    if args.cancellation and args.follow_up_of is None:
        raise CommandError("--cancellation needs --follow-up-of ID (the message it cancels)")
    engine = open_database(settings.resolved_database_url)
    author = _author(engine, args.who)
    with session_scope(engine) as s:
        bin_ = bin_by_number(s, args.bin)
        if bin_ is None:
            raise CommandError(f"no BIN number {args.bin} (see `binfoon bin list`)")
        language = bin_.language.value
        if args.follow_up_of is not None and not may_follow_up(s, args.follow_up_of, bin_.id):
            raise CommandError(f"message {args.follow_up_of} is not a message of BIN {args.bin}")
        coordinators = s.scalar(select(RoleAssignment.id).where(RoleAssignment.role == Role.COORDINATOR,
                                                                RoleAssignment.bin_id == bin_.id).limit(1))
    # Warnings, not refusals: the message is stored either way and goes once the cause is fixed.
    if coordinators is None:
        print(f"binfoon: warning: BIN {args.bin} has no coordinator: nobody can review this message "
              f"(`binfoon members add --bin {args.bin} --coordinator ...`)", file=sys.stderr)
    _warn_without_service(settings)
    desk = MessageDesk(engine, RecordingStore(settings.data_dir / "recordings"))
    with tempfile.TemporaryDirectory() as tmp:
        audio = synthesize(text, language, Path(tmp) / "message.wav")
        kind = MessageKind.ALERT if args.follow_up_of is None else (
            MessageKind.CANCELLATION if args.cancellation else MessageKind.UPDATE)
        message_id = desk.submit_text_message(args.bin, Urgency.URGENT if args.urgent else Urgency.PREVENTIVE,
                                              text, audio, actor() if author is None else f"{actor()} as "
                                              f"person:{author}", follow_up_of=args.follow_up_of, kind=kind,
                                              author_id=author)
    print(f"message {message_id} submitted for BIN {args.bin}: spoken in {language}; the running service "
          f"(`binfoon serve`) calls the coordinators now. Follow it with `binfoon message show {message_id}`.")
    return 0


def _author(engine: Engine, who: str | None) -> int | None:
    """``--as``: the author's person id, an active police officer (or approver) or admin."""
    from ivr.archive.access import resolve_person

    if who is None:
        return None
    with session_scope(engine) as s:
        person = resolve_person(s, who)
        if person is None:
            raise CommandError(f"--as {who}: no such person (give person:ID or a phone number only they have)")
        roles = set(s.scalars(select(RoleAssignment.role).where(RoleAssignment.person_id == person.id)))
        if not person.active or not roles & {Role.POLICE_OFFICER, Role.POLICE_APPROVER, Role.ADMIN}:
            raise CommandError(f"--as {who}: {person.name} is not an active police officer or admin")
        return person.id


def _warn_without_service(settings: Settings) -> None:
    """The message waits in the database until ``binfoon serve`` runs: say so (stderr, not an error)."""
    from ivr.commands.health import check_service

    check = check_service(settings)
    if not check.ok:
        print(f"binfoon: warning: the service is not running ({check.detail}); the message is stored and "
              f"goes once `binfoon serve` runs", file=sys.stderr)


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    """Cancel a message before it goes (audited): its alarm, if any, will find nothing to deliver."""
    engine = open_database(settings.resolved_database_url)
    who = acting(engine, args.who)
    try:
        with session_scope(engine) as s:
            cancel_message(s, args.id, who, dt.datetime.now(dt.timezone.utc))
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    print(f"message {args.id} cancelled: it will not be delivered")
    return 0


def cmd_retract(settings: Settings, args: argparse.Namespace) -> int:
    """Send a retraction of a delivered message to exactly those who received it (stops it if running)."""
    engine = open_database(settings.resolved_database_url)
    who = acting(engine, args.who)
    try:
        new_id = submit_retraction(engine, RecordingStore(settings.data_dir / "recordings"), args.id, who,
                                   text=args.text, audio=args.audio)
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    _warn_without_service(settings)
    print(f"message {new_id} retracts message {args.id}: approved at once (a retraction needs no review), it "
          f"goes to exactly the members who received message {args.id}. Follow it with "
          f"`binfoon message show {new_id}`.")
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    """Print where a message stands."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        try:
            report = describe(s, args.id)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"message {report['id']}  BIN {report['bin']} ({report['bin_name']})  {report['urgency']}  "
          f"{report['source']}")
    print(f"  status: {report['status_text']}")
    for call in report["review_calls"]:  # type: ignore[attr-defined]
        print(f"  review call to {call['role']} {call['number']} (round {call['round']}): {call['outcome'] or 'dialling'}")
    decision = report["decision"]
    if isinstance(decision, dict):
        when = f" for {decision['deliver_at']}" if decision["deliver_at"] else ""
        print(f"  decision: {decision['decision']}{when} by {decision['by']} ({decision['via']}) at {decision['at']}")
    delivery = report["delivery"]
    if isinstance(delivery, dict):
        print(f"  delivery: {delivery['confirmed']} of {delivery['members']} members confirmed "
              f"({delivery['attempts']} calls)")
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """The latest messages, newest first."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        for m in latest_messages(s, max(1, args.limit), args.bin):
            print(f"{m.id:>6}  BIN {m.bin.number:<6} {m.urgency.value:<10} {STATUS_TEXT[m.status]}")
    return 0
