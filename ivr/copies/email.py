"""The e-mail copies: what one member's e-mail copy says, and the message as it goes on the wire. The
SMTP relay is ``ivr.copies.smtp``; the unsubscribe link's effect is ``ivr.copies.unsubscribe``.

Rules:
- a copy is composed from the campaign's message alone (typed text, machine transcript, the recording
  attached) in the member's language; a machine transcript always says it was made by a computer and
  may contain errors; a drill says TEST in its subject and first line;
- its Message-ID is ``<copy id@domain of email_from>``: composed again after a crash, it is the same
  message, so the relay and the member's mailbox can tell a resend from a new copy;
- nothing from the data reaches a header unchecked: names lose their line breaks and control
  characters, addresses with any are refused (no header injection);
- a recording that cannot be read or is too large is left out and the body says so (``wire_bytes``):
  the member still gets the text and the number to call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ivr.copies.gateways import EmailCopy
from ivr.domain.channels import check_email
from ivr.domain.vocabulary import Urgency

if TYPE_CHECKING:
    from ivr.config import Settings

#: What an e-mail copy's fixed words are, per language (Dutch when the member's is not known).
WORDING: dict[str, dict[str, str]] = {
    "nl": {
        "urgent": "Dringend bericht van de politie",
        "preventive": "Preventief bericht van de politie",
        "drill": "TEST: dit is een oefening van het BIN-netwerk, geen echt bericht van de politie.",
        "heading": "{label} voor BIN {name} (BIN {number}).",
        "text": "Het bericht:",
        "transcript": ("Wat de politie insprak, automatisch uitgeschreven door een computer (er kunnen fouten "
                       "in staan; de opname in de bijlage is wat telt):"),
        "nothing_written": "Dit bericht is alleen ingesproken: beluister de opname in de bijlage.",
        "audio": "De opname van het bericht zit in de bijlage ({file}).",
        "audio_missing": ("De opname kon niet bij deze e-mail worden gevoegd: bel het nummer hieronder om "
                          "ze te beluisteren."),
        "callback": "Bel {number} om het bericht te beluisteren en te bevestigen dat u het ontving.",
        "why": "U krijgt deze e-mail als lid van BIN {name}. Dit bericht is automatisch verstuurd; "
               "antwoorden worden niet gelezen.",
        "unsubscribe_url": "Geen e-mails meer ontvangen? Meld u af: {url}",
        "unsubscribe_mail": ("Geen e-mails meer ontvangen? Stuur een e-mail naar {address} "
                             "met als onderwerp: {subject}"),
        "unsubscribe_mail_also": "U kunt ook een e-mail sturen naar {address} met als onderwerp: {subject}",
    },
    "fr": {
        "urgent": "Message urgent de la police",
        "preventive": "Message préventif de la police",
        "drill": "TEST : ceci est un exercice du réseau BIN, pas un vrai message de la police.",
        "heading": "{label} pour le BIN {name} (BIN {number}).",
        "text": "Le message :",
        "transcript": ("Ce que la police a dit, transcrit automatiquement par un ordinateur (il peut contenir "
                       "des erreurs ; l'enregistrement joint fait foi) :"),
        "nothing_written": "Ce message est uniquement parlé : écoutez l'enregistrement joint.",
        "audio": "L'enregistrement du message est joint à cet e-mail ({file}).",
        "audio_missing": ("L'enregistrement n'a pas pu être joint à cet e-mail : appelez le numéro ci-dessous "
                          "pour l'écouter."),
        "callback": "Appelez le {number} pour écouter le message et confirmer que vous l'avez reçu.",
        "why": "Vous recevez cet e-mail en tant que membre du BIN {name}. Ce message est envoyé automatiquement ; "
               "les réponses ne sont pas lues.",
        "unsubscribe_url": "Ne plus recevoir d'e-mails ? Désinscrivez-vous : {url}",
        "unsubscribe_mail": "Ne plus recevoir d'e-mails ? Envoyez un e-mail à {address} avec pour objet : {subject}",
        "unsubscribe_mail_also": "Vous pouvez aussi envoyer un e-mail à {address} avec pour objet : {subject}",
    },
    "de": {
        "urgent": "Dringende Nachricht der Polizei",
        "preventive": "Vorbeugende Nachricht der Polizei",
        "drill": "TEST: Dies ist eine Übung des BIN-Netzwerks, keine echte Nachricht der Polizei.",
        "heading": "{label} für BIN {name} (BIN {number}).",
        "text": "Die Nachricht:",
        "transcript": ("Was die Polizei gesprochen hat, automatisch von einem Computer niedergeschrieben (kann "
                       "Fehler enthalten; maßgeblich ist die beigefügte Aufnahme):"),
        "nothing_written": "Diese Nachricht ist nur gesprochen: Hören Sie die beigefügte Aufnahme an.",
        "audio": "Die Aufnahme der Nachricht ist dieser E-Mail beigefügt ({file}).",
        "audio_missing": ("Die Aufnahme konnte dieser E-Mail nicht beigefügt werden: Rufen Sie die unten "
                          "stehende Nummer an, um sie anzuhören."),
        "callback": ("Rufen Sie {number} an, um die Nachricht anzuhören und zu bestätigen, dass Sie sie "
                     "erhalten haben."),
        "why": "Sie erhalten diese E-Mail als Mitglied von BIN {name}. Diese Nachricht wurde automatisch versandt; "
               "Antworten werden nicht gelesen.",
        "unsubscribe_url": "Keine E-Mails mehr erhalten? Abmelden: {url}",
        "unsubscribe_mail": ("Keine E-Mails mehr erhalten? Senden Sie eine E-Mail an {address} "
                             "mit dem Betreff: {subject}"),
        "unsubscribe_mail_also": "Sie können auch eine E-Mail an {address} senden mit dem Betreff: {subject}",
    },
}
#: An attachment larger than this is not sent (a police message is minutes of 8 kHz audio: ~1 MB a minute).
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
_COPY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,76}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


class _UriList(UnstructuredHeader):
    """List-Unsubscribe: URIs are folded between each other, never encoded (an RFC 2047 word is no URI)."""

    def fold(self, *, policy: Any) -> str:
        parts = [part.strip() for part in str(self).split(",")]
        return f"{self.name}: " + ("," + policy.linesep + " ").join(parts) + policy.linesep


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _UriList)
#: SMTP line ends, 78-column folding, and List-Unsubscribe left as URIs.
POLICY = email.policy.SMTP.clone(header_factory=_HEADERS)


@dataclass(frozen=True)
class EmailContent:
    """What one member's e-mail copy says: the campaign's message, its BIN, and the member."""

    #: ``TextCopy.id``: the Message-ID is made of it.
    copy_id: str
    to: str
    #: The member's language (nl, fr, de).
    language: str
    bin_number: int
    bin_name: str
    urgency: Urgency
    drill: bool
    message_id: int
    #: The BIN line a member calls back on to hear and confirm the message (E.164).
    callback_number: str
    #: The typed text (a message given in writing).
    text: str | None = None
    #: The speech recogniser's transcript of the recording (always machine-made).
    transcript: str | None = None
    #: The recording as a plain WAV (attached as ``bin-<number>-bericht-<message id>.wav``).
    audio: Path | None = None


@dataclass(frozen=True)
class MailOrigin:
    """Where e-mail copies come from and where unsubscribing goes (settings ``email_*``)."""

    email_from: str
    #: Where a List-Unsubscribe mail goes (empty: ``email_from``).
    unsubscribe_to: str = ""
    #: The public address of the console's unsubscribe page (``https://.../unsubscribe``; empty: mailto only).
    unsubscribe_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> MailOrigin:
        """The origin of ``settings`` (``email_from``, ``email_unsubscribe_to``, ``email_unsubscribe_url``)."""
        return cls(settings.email_from, settings.email_unsubscribe_to, settings.email_unsubscribe_url)


def one_line(value: str, limit: int = 200) -> str:
    """``value`` as one header-safe line: line breaks and control characters become spaces, runs of
    spaces one, cut to ``limit`` characters."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def mailbox(value: str, what: str) -> tuple[str, str]:
    """(display name, address) of a configured address such as ``BINfoon <bin@zone.be>``; ``ValueError``
    for one with line breaks, control characters, or no single ASCII ``local@domain`` in it."""
    if _CONTROL.search(value):
        raise ValueError(f"{what}: line breaks or control characters in {value!r}")
    name, address = email.utils.parseaddr(value)
    local, _, domain = address.rpartition("@")
    if (not address.isascii() or not local or not domain or len(address) > 254
            or any(c in address for c in ' <>(),;:"[]\\')):
        raise ValueError(f"{what}: {value!r} is not an e-mail address")
    return one_line(name, 100), address


def attachment_name(bin_number: int, message_id: int) -> str:
    """The recording's file name in the e-mail."""
    return f"bin-{int(bin_number)}-bericht-{int(message_id)}.wav"


def subject_of(content: EmailContent) -> str:
    """``[BIN <name>] <urgency label>`` in the member's language, ``TEST`` first for a drill."""
    words = WORDING.get(content.language, WORDING["nl"])
    subject = f"[BIN {one_line(content.bin_name, 100)}] {words[content.urgency.value]}"
    return f"TEST {subject}" if content.drill else subject


def _unsubscribe(origin: MailOrigin, from_address: str, token: str) -> tuple[str, str, str | None]:
    """(the address unsubscribe mails go to, the mailto URI, the web URI or ``None``) of a member's
    List-Unsubscribe."""
    _, to = mailbox(origin.unsubscribe_to or from_address, "email_unsubscribe_to")
    mailto = f"mailto:{to}?subject={quote('unsubscribe ' + token)}"
    url = origin.unsubscribe_url.strip()
    if not url:
        return to, mailto, None
    if _CONTROL.search(url) or any(c in url for c in ' <>,"\\') or not url.startswith(("https://", "http://")):
        raise ValueError(f"email_unsubscribe_url: {url!r} is not a web address")
    return to, mailto, f"{url.rstrip('/')}/{token}"


def compose_email(content: EmailContent, origin: MailOrigin, token: str, now: dt.datetime) -> EmailCopy:
    """One member's e-mail copy: subject, plain-text body, recording attached, and the headers (From,
    Date, List-Unsubscribe with ``token``, one-click when the link is https, Auto-Submitted).

    ``ValueError`` for an address, copy id or token that could carry anything into a header."""
    if not _COPY_ID.match(content.copy_id):
        raise ValueError(f"not a copy id: {content.copy_id!r}")
    if not _TOKEN.match(token):
        raise ValueError("not an unsubscribe token")
    if _CONTROL.search(content.to):
        raise ValueError("the member's e-mail address has line breaks or control characters")
    to = check_email(content.to)
    from_name, from_address = mailbox(origin.email_from, "email_from")
    unsubscribe_to, mailto, url = _unsubscribe(origin, from_address, token)
    words = WORDING.get(content.language, WORDING["nl"])
    name = one_line(content.bin_name, 100)
    file_name = attachment_name(content.bin_number, content.message_id)

    paragraphs = [words["drill"]] if content.drill else []
    paragraphs.append(words["heading"].format(label=words[content.urgency.value], name=name,
                                              number=content.bin_number))
    text = (content.text or "").strip()
    transcript = (content.transcript or "").strip()
    if text:
        paragraphs.append(f"{words['text']}\n{text}")
    if transcript and transcript != text:
        paragraphs.append(f"{words['transcript']}\n{transcript}")
    if not text and not transcript:
        paragraphs.append(words["nothing_written"])
    if content.audio is not None:
        paragraphs.append(words["audio"].format(file=file_name))
    paragraphs.append(words["callback"].format(number=one_line(content.callback_number, 30)))
    footer = [words["why"].format(name=name)]
    by_mail = {"address": unsubscribe_to, "subject": f"unsubscribe {token}"}
    if url:
        footer.append(words["unsubscribe_url"].format(url=url))
        footer.append(words["unsubscribe_mail_also"].format(**by_mail))
    else:
        footer.append(words["unsubscribe_mail"].format(**by_mail))
    body = "\n\n".join(paragraphs) + "\n\n-- \n" + "\n".join(footer) + "\n"

    headers = {
        "From": email.utils.formataddr((from_name, from_address)) if from_name else from_address,
        "Date": email.utils.format_datetime(now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)),
        "Content-Language": content.language if content.language in WORDING else "nl",
        "Auto-Submitted": "auto-generated",
        "List-Unsubscribe": f"<{mailto}>" + (f", <{url}>" if url else ""),
    }
    if url and url.startswith("https://"):
        # RFC 8058: a mail provider may POST "List-Unsubscribe=One-Click" to the https link itself.
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    domain = from_address.rpartition("@")[2]
    return EmailCopy(copy_id=content.copy_id, to=to, subject=subject_of(content), body=body,
                     message_id=f"<{content.copy_id}@{domain}>",
                     attachments=((file_name, content.audio),) if content.audio is not None else (),
                     headers=headers)


class AttachmentError(ValueError):
    """An attachment cannot be read or is too large (the message can go without it)."""


def mime_message(mail: EmailCopy) -> EmailMessage:
    """The e-mail as it goes on the wire: headers checked again (no CR/LF anywhere), the body as
    quoted-printable UTF-8, each attachment read from its file (at most ``MAX_ATTACHMENT_BYTES``).
    ``AttachmentError`` for one that cannot be read or is larger; ``ValueError`` for a bad header."""
    message = EmailMessage(policy=POLICY)
    fixed = {"Message-ID": mail.message_id, "To": mail.to, "Subject": mail.subject}
    headers = [*fixed.items(), *mail.headers.items()]
    for name, value in headers:
        if not _HEADER_NAME.match(name) or _CONTROL.search(value):
            raise ValueError(f"header {name!r}: not a header name, or line breaks in its value")
    # Content-* headers go on last: setting the content replaces them.
    for name, value in headers:
        if not name.lower().startswith("content-"):
            message[name] = value
    message.set_content(mail.body, subtype="plain", charset="utf-8", cte="quoted-printable")
    for file_name, path in mail.attachments:
        if _CONTROL.search(file_name) or "/" in file_name:
            raise ValueError(f"not an attachment name: {file_name!r}")
        try:
            with path.open("rb") as source:
                data = source.read(MAX_ATTACHMENT_BYTES + 1)
        except OSError as exc:
            raise AttachmentError(f"{file_name}: {exc.strerror or exc}") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise AttachmentError(f"{file_name}: larger than {MAX_ATTACHMENT_BYTES} bytes")
        message.add_attachment(data, maintype="audio", subtype="wav", filename=file_name)
    for name, value in headers:
        if name.lower().startswith("content-"):
            message[name] = value
    return message


def without_attachments(mail: EmailCopy) -> EmailCopy:
    """``mail`` with no attachment, its body saying the recording could not be attached (in the
    language of its Content-Language) where it said the recording was attached."""
    words = WORDING.get(mail.headers.get("Content-Language", "nl"), WORDING["nl"])
    body = mail.body
    for file_name, _ in mail.attachments:
        said = words["audio"].format(file=file_name)
        if said in body:
            body = body.replace(said, words["audio_missing"])
        else:
            head, signature, foot = body.partition("\n\n-- \n")
            body = f"{head}\n\n{words['audio_missing']}{signature}{foot}"
    return dataclasses.replace(mail, body=body, attachments=())


def wire_bytes(mail: EmailCopy) -> tuple[bytes, str]:
    """The bytes of ``mail`` as they go to the relay, and why its recording was left out (``""``: it was
    not). Blocking (reads and encodes the recording): for a worker thread. ``ValueError`` for a header
    or address that cannot go."""
    try:
        return mime_message(mail).as_bytes(policy=POLICY), ""
    except AttachmentError as exc:
        return mime_message(without_attachments(mail)).as_bytes(policy=POLICY), str(exc)
