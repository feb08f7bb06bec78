"""``binfoon archive search|list|play|export|purge|seal``: the archive of police messages.

Who replays: ``play`` needs ``--as WHO`` (``person:ID``, a person id, or one of their phone
numbers). The command line does not authenticate: whoever can run it can read the database
anyway. ``--as`` says on whose behalf the recording is heard, is checked against that person's
roles (admin, or police of the message's zone) and is written to the audit log together with the
operating-system user who typed the command. An admin console or phone line authenticates the
person first and passes the same identity to ``ivr.archive.store.Archive.play``. ``export`` (a CAP 1.2
document plus the audio) follows the same rule and is audited the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ivr.archive.store import Archive, ArchiveEntry, ArchiveError
from ivr.commands.common import CommandError, actor, parse_when, positive_int, refuse_overwrite
from ivr.config import Settings
from storage.db import open_database
from storage.models import utcnow
from ivr.domain.vocabulary import MessageStatus, Urgency
from storage.recordings import RecordingStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``archive`` commands."""
    archive = sub.add_parser("archive", help="search, list, replay and purge past messages").add_subparsers(
        dest="action", required=True)
    p = archive.add_parser(
        "search", help="messages whose transcript or text holds every word",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Messages whose transcript or typed text holds every word given (newest first).",
        epilog="""query syntax:
  inbraak kerkstraat   every word is required (AND); case and accents do not matter ("een" finds "één")
  inbraak              also finds other forms of the word: inbraken, woning -> woningen,
                       cambriolage -> cambriolages (Dutch, French and German stems; a message is
                       stemmed in its BIN's language, the query word in all three)
  inbr*                words beginning with "inbr" (at least 3 letters before the *; never the
                       middle of a word)
not supported: OR, "phrases", negation (-word, NOT), NEAR; quotes, OR, NOT, - and other
punctuation are taken as words or blanks, never as operators (a word starting with - goes
after --: binfoon archive search -- -x).""")
    p.add_argument("words", nargs="+", metavar="WORD", help="a word, or a prefix written word*")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many messages (default 50)")
    p.add_argument("--as", dest="who", metavar="WHO", help="on whose behalf (person:ID or phone); audited")
    p.set_defaults(func=cmd_search)
    p = archive.add_parser("list", help="messages by BIN, zone, date, urgency, status (newest first)")
    p.add_argument("--bin", type=int, help="BIN number")
    p.add_argument("--zone", help="police zone code")
    p.add_argument("--from", dest="since", metavar="WHEN",
                   help="from this local date or time (2026-11-23 or 2026-11-23T14:00)")
    p.add_argument("--to", dest="until", metavar="WHEN", help="up to this local date (inclusive) or time")
    p.add_argument("--urgency", choices=[u.value for u in Urgency])
    p.add_argument("--status", choices=[s.value for s in MessageStatus])
    p.add_argument("--limit", type=positive_int, help="at most this many messages")
    p.set_defaults(func=cmd_list)
    p = archive.add_parser("play", help="replay a message's recording (admins and the zone's police only)")
    p.add_argument("id", type=int, metavar="ID", help="message id")
    p.add_argument("--as", dest="who", required=True, metavar="WHO",
                   help="who asks: person:ID, a person id, or their phone number (checked and audited)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="write a copy to this new file instead of playing it")
    p.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    p.add_argument("--take", type=int, help="another take than the one sent")
    p.set_defaults(func=cmd_play)
    p = archive.add_parser("export", help="a message as a CAP 1.2 document plus its audio "
                                          "(admins and the zone's police only)")
    p.add_argument("id", type=int, metavar="ID", help="message id")
    p.add_argument("--as", dest="who", required=True, metavar="WHO",
                   help="who asks: person:ID, a person id, or their phone number (checked and audited)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="existing folder: ID.cap.xml and ID.wav are written into it")
    p.add_argument("--force", action="store_true", help="replace ID.cap.xml and ID.wav if the folder has them")
    p.add_argument("--no-embed", action="store_true",
                   help="refer to the audio file by URI instead of embedding it in the document")
    p.set_defaults(func=cmd_export)
    p = archive.add_parser("purge", help="delete recordings and transcripts past the retention period")
    p.add_argument("--days", type=int,
                   help="retention in days (default: the retention_days setting; 0 = keep everything)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.set_defaults(func=cmd_purge)
    p = archive.add_parser("seal", help="encrypt recordings stored before sealing existed (the service does it "
                                        "at start)")
    p.set_defaults(func=cmd_seal)


def _archive(settings: Settings) -> Archive:
    engine = open_database(settings.resolved_database_url)
    return Archive(engine, RecordingStore(settings.data_dir / "recordings"), operator=actor())


def _line(entry: ArchiveEntry, settings: Settings) -> str:
    when = entry.created_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
    line = (f"{entry.message_id:>6}  {when}  BIN {entry.bin_number} ({entry.bin_name})  "
            f"zone {entry.zone_code}  {entry.urgency.value:<10} {entry.status.value}")
    return f"{line}\n        {entry.snippet}" if entry.snippet else line


def _searcher(archive: Archive, who: str) -> str:
    """The person ``--as`` names, as the audit names them (``person:ID``); one who does not exist (or
    is deactivated) is refused, as ``play`` refuses them, rather than audited as a typo."""
    from ivr.archive.access import resolve_person
    from storage.db import session_scope

    with session_scope(archive.engine) as s:
        person = resolve_person(s, who)
        if person is None:
            raise CommandError(f"--as {who}: not a known person (give person:ID, or a phone number only they have)")
        if not person.active:
            raise CommandError(f"--as {who}: person {person.id} ({person.name}) is deactivated")
        return f"person:{person.id}"


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Print the messages whose transcript or typed text holds every word."""
    archive = _archive(settings)
    who = _searcher(archive, args.who) if args.who is not None else actor()
    try:
        entries = archive.search(args.words, who, limit=args.limit)
    except ArchiveError as exc:
        raise CommandError(str(exc)) from None
    for entry in entries:
        print(_line(entry, settings))
    if not entries:
        print("no message holds all these words")
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print the messages that match every filter given."""
    since = parse_when(args.since, settings, end_of_day=False) if args.since else None
    until = parse_when(args.until, settings, end_of_day=True) if args.until else None
    if since is not None and until is not None and until <= since:
        raise CommandError("--to must be after --from")
    entries = _archive(settings).list(
        bin=args.bin, zone=args.zone, since=since, until=until,
        urgency=Urgency(args.urgency) if args.urgency else None,
        status=MessageStatus(args.status) if args.status else None,
        limit=args.limit)
    for entry in entries:
        print(_line(entry, settings))
    if not entries:
        print("no message matches")
    return 0


@contextmanager
def _replacing(paths: list[Path], force: bool) -> Iterator[None]:
    """One rule (``refuse_overwrite``): an existing file is replaced only with ``--force``. The archive
    never writes over a file, so the old ones are set aside first and put back if the archive refuses
    (access denied, damaged recording): a refused ``--force`` leaves everything as it was."""
    for path in paths:
        refuse_overwrite(path, force)
    aside = [(path, path.with_name(f".{path.name}.replaced")) for path in paths if path.is_file()]
    for path, kept in aside:
        path.replace(kept)
    try:
        yield
    except BaseException:
        for path, kept in aside:
            kept.replace(path)
        raise
    for _path, kept in aside:
        kept.unlink()


def cmd_play(settings: Settings, args: argparse.Namespace) -> int:
    """Replay a recording to a file or the speakers, if the person asking may."""
    try:
        with _replacing([args.out] if args.out is not None else [], args.force):
            path = _archive(settings).play(args.id, args.who, args.out, take=args.take)
    except ArchiveError as exc:  # AccessDenied included: the refusal is already audited
        raise CommandError(str(exc)) from None
    print(f"message {args.id}: copy written to {path}" if args.out
          else f"message {args.id}: played {path.name}")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write the CAP 1.2 document and the original audio of a message, if the person asking may."""
    try:
        with _replacing([args.out / f"{args.id}.cap.xml", args.out / f"{args.id}.wav"], args.force):
            export = _archive(settings).export(args.id, args.who, args.out, settings.tz,
                                               embed_audio=not args.no_embed)
    except ArchiveError as exc:  # AccessDenied included: the refusal is already audited
        raise CommandError(str(exc)) from None
    print(f"message {args.id}: CAP 1.2 {export.msg_type} {export.identifier} written to {export.cap_file}, "
          f"audio to {export.audio_file}")
    return 0


def cmd_seal(settings: Settings, args: argparse.Namespace) -> int:
    """Seal every plain (legacy) recording and transcript with the installation's key; audited with the count."""
    from ivr.archive.at_rest import seal_legacy
    from ivr.archive.search import seal_plain_transcripts
    from storage.sealed import KeyFileError

    archive = _archive(settings)
    try:
        report = seal_legacy(archive.engine, archive.store, actor())
        transcripts = seal_plain_transcripts(archive.engine, archive.store)
    except KeyFileError as exc:
        raise CommandError(str(exc)) from None
    print(f"sealed {report.sealed} recording(s) with {archive.store.key_file}")
    print(f"sealed {transcripts} transcript(s)")
    for problem in report.problems:
        print(f"not sealed: {problem}")
    return 1 if report.problems else 0


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    """Delete what is past the retention period (audited), or say what would go with ``--dry-run``."""
    days = settings.retention_days if args.days is None else args.days
    if days < 0:
        raise CommandError("--days must be 0 (keep for ever) or more")
    report = _archive(settings).purge_expired(utcnow(), days, actor(), dry_run=args.dry_run)
    if report.cutoff is None:
        print("retention is 0 days: everything is kept, nothing purged")
        return 0
    verb = "would purge" if report.dry_run else "purged"
    print(f"{verb} {report.count('recording')} recordings, {report.count('transcript')} transcripts and "
          f"{report.count('text')} typed texts older than {days} days "
          f"(before {report.cutoff.astimezone(settings.tz):%Y-%m-%d %H:%M})")
    for item in report.purged:
        print(f"  message {item.message_id}: {item.kind} {item.item_id} of "
              f"{item.created_at.astimezone(settings.tz):%Y-%m-%d}")
    if report.held:
        print(f"kept, still in flight: messages {', '.join(map(str, report.held))}")
    for problem in report.problems:
        print(f"not purged: {problem}")
    return 0
