"""Common Alerting Protocol 1.2 (OASIS, urn:oasis:names:tc:emergency:cap:1.2) documents of police messages.

Rules of this module:

* Pure: ``alert_xml`` turns a ``CapMessage`` (plain values) into the bytes of one ``<alert>``;
  reading the database and the audited, access-checked export live in ``ivr.archive.store.Archive.export``.
* One message, one document. A follow-up is ``msgType`` Update, a cancellation Cancel; both carry
  ``<references>`` to the messages they follow ("sender,identifier,sent", oldest first), built by the
  same functions as the first message's own document so the triples match character for character.
* ``sent`` is when the officer sent the message (not when it is exported): exporting twice gives
  the same header. Times carry their offset (CAP forbids "Z"); local time of the zone.
* A drill ("Testbericht BIN-foon") is status Exercise, with "Test:" before its headline: no system
  that reads the document may take it for a real alert. Every other message is Actual.
* Police messages are never public: scope Restricted (the BIN's members and the zone's police),
  or Private with ``<addresses>`` when the recipients are named.
* Control characters never reach the document: XML 1.0 forbids the C0 controls other than tab, newline
  and carriage return (one would make the whole file unreadable), and DEL or an escape sequence in a
  transcript or a name is noise or an attack on the terminal that shows it. Every text is cleaned.
* The original recording travels as ``<resource>``: audio/x-wav, its size, its SHA-1 ``<digest>``
  (CAP 1.2 names SHA-1), and either the base64 content in ``<derefUri>`` with a relative ``<uri>``
  naming it, or an absolute ``<uri>``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ivr.domain.vocabulary import MessageKind, Urgency

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
LANGUAGE = "nl-BE"
MIME_WAV = "audio/x-wav"

MSG_TYPE = {MessageKind.ALERT: "Alert", MessageKind.UPDATE: "Update", MessageKind.CANCELLATION: "Cancel"}

#: dringend / preventief as CAP (urgency, severity, certainty). An urgent message reports what the
#: police see now (a suspect van in the street: act now, property at risk); a preventive one is advice
#: for the coming days (lock up, beware of fake plumbers), delivered outside quiet hours.
IMPACT: dict[Urgency, tuple[str, str, str]] = {
    Urgency.URGENT: ("Immediate", "Severe", "Observed"),
    Urgency.PREVENTIVE: ("Future", "Moderate", "Possible"),
}

_URGENCY_NL = {Urgency.URGENT: "Dringend", Urgency.PREVENTIVE: "Preventief"}
_KIND_NL = {MessageKind.ALERT: "", MessageKind.UPDATE: " (opvolging)",
            MessageKind.CANCELLATION: " (annulering)"}


#: What ``clean_text`` deletes: C0 controls except tab, newline and carriage return; DEL; and the two
#: non-characters XML 1.0 also forbids (U+FFFE, U+FFFF).
_CONTROLS = dict.fromkeys([*(c for c in range(0x20) if chr(c) not in "\t\n\r"), 0x7F, 0xFFFE, 0xFFFF])


def clean_text(text: str) -> str:
    """``text`` without the control characters a CAP document may not (or should not) hold."""
    return text.translate(_CONTROLS)


class CapError(ValueError):
    """The values cannot make a valid CAP 1.2 document (says which and why)."""


def cap_time(when: dt.datetime, tz: dt.tzinfo) -> str:
    """``when`` as CAP wants it: local time to the second with its offset (``2026-11-23T14:05:00+01:00``)."""
    if when.tzinfo is None:  # SQLite hands back naive UTC
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(tz).replace(microsecond=0).isoformat()


def sender_for(zone_code: str) -> str:
    """The CAP ``sender`` of a zone's messages (no spaces, commas, ``<`` or ``&``, as CAP requires)."""
    return _token(f"binfoon.pz{zone_code}", "sender")


def identifier_for(zone_code: str, message_id: int) -> str:
    """The CAP ``identifier`` of a message: unique for its sender, stable across exports."""
    return _token(f"BINFOON-{zone_code}-{message_id}", "identifier")


def _token(value: str, what: str) -> str:
    if not value or any(ch in value for ch in " \t\r\n,<&"):
        raise CapError(f"CAP {what} {value!r} may not contain spaces, commas, '<' or '&'")
    return value


@dataclass(frozen=True)
class CapRef:
    """Who sent which message when: the triple a ``<references>`` entry holds."""

    sender: str
    identifier: str
    sent: dt.datetime

    def reference(self, tz: dt.tzinfo) -> str:
        """``sender,identifier,sent`` (CAP 1.2, 3.2.1 references)."""
        return f"{self.sender},{self.identifier},{cap_time(self.sent, tz)}"


@dataclass(frozen=True)
class CapAudio:
    """The original recording attached as a ``<resource>``."""

    file_name: str
    data: bytes
    take: int
    duration_s: float

    @property
    def sha1(self) -> str:
        """SHA-1 of the audio, hex: CAP 1.2's ``<digest>`` algorithm."""
        return hashlib.sha1(self.data).hexdigest()


@dataclass(frozen=True)
class CapMessage:
    """Everything a CAP document of one police message says."""

    ref: CapRef
    kind: MessageKind
    urgency: Urgency
    zone_code: str
    zone_name: str
    bin_number: int
    bin_name: str
    streets: tuple[str, ...] = ()
    #: The typed text, else the transcript; ``None`` when there is neither (a note says so).
    description: str | None = None
    #: The messages this one follows (oldest first); empty for a new alert.
    references: tuple[CapRef, ...] = ()
    #: Named recipients: the scope becomes Private with these ``<addresses>``.
    addresses: tuple[str, ...] = ()
    audio: CapAudio | None = None
    #: A drill: status Exercise instead of Actual.
    exercise: bool = False


def area_description(msg: CapMessage) -> str:
    """``BIN 12 Kerkwijk (politiezone 5415 Gent): Kerkstraat, Molenstraat``."""
    text = f"BIN {msg.bin_number} {msg.bin_name} (politiezone {msg.zone_code} {msg.zone_name})"
    return f"{text}: {', '.join(msg.streets)}" if msg.streets else text


def _addresses(addresses: tuple[str, ...]) -> str:
    # CAP: space-delimited, an address holding a space in double quotes.
    return " ".join(f'"{a}"' if any(ch.isspace() for ch in a) else a for a in addresses)


def alert_element(msg: CapMessage, tz: dt.tzinfo, *, audio_uri: str | None = None) -> ET.Element:
    """The ``<alert>`` element, children in the order the CAP 1.2 schema's sequences require.

    ``audio_uri``: an absolute URI where the audio can be fetched; without it the audio is embedded
    (``<derefUri>``, base64) and ``<uri>`` is its file name, the relative form CAP allows for that.
    """
    if msg.kind is not MessageKind.ALERT and not msg.references:
        raise CapError(f"a {MSG_TYPE[msg.kind]} must reference the message it follows")

    def add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        child = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
        if text is not None:
            child.text = clean_text(text)  # every text of the document passes here
        return child

    alert = ET.Element(f"{{{CAP_NS}}}alert")
    add(alert, "identifier", _token(msg.ref.identifier, "identifier"))
    add(alert, "sender", _token(msg.ref.sender, "sender"))
    add(alert, "sent", cap_time(msg.ref.sent, tz))
    add(alert, "status", "Exercise" if msg.exercise else "Actual")
    add(alert, "msgType", MSG_TYPE[msg.kind])
    if msg.addresses:
        add(alert, "scope", "Private")
        add(alert, "addresses", _addresses(msg.addresses))
    else:
        add(alert, "scope", "Restricted")
        add(alert, "restriction", f"Politiebericht voor de leden van BIN {msg.bin_number} {msg.bin_name} en "
                                  f"de politiezone {msg.zone_code}; niet openbaar verspreiden.")
    if msg.description is None:
        add(alert, "note", "Geen getypte tekst of transcript beschikbaar; de originele opname is bijgevoegd.")
    if msg.references:
        add(alert, "references", " ".join(r.reference(tz) for r in msg.references))

    info = add(alert, "info")
    add(info, "language", LANGUAGE)
    add(info, "category", "Security")
    add(info, "event", "Politiebericht buurtinformatienetwerk")
    urgency, severity, certainty = IMPACT[msg.urgency]
    add(info, "urgency", urgency)
    add(info, "severity", severity)
    add(info, "certainty", certainty)
    add(info, "audience", f"Leden van BIN {msg.bin_number} {msg.bin_name}")
    add(info, "senderName", f"Politiezone {msg.zone_name} ({msg.zone_code})")
    add(info, "headline", ("Test: " if msg.exercise else "") + f"{_URGENCY_NL[msg.urgency]} politiebericht"
                          f"{_KIND_NL[msg.kind]} voor BIN {msg.bin_number} {msg.bin_name}")
    if msg.description is not None:
        add(info, "description", msg.description)
    if msg.audio is not None:
        resource = add(info, "resource")
        add(resource, "resourceDesc", f"Originele opname van de politie (take {msg.audio.take}, "
                                      f"{msg.audio.duration_s:.1f} s)")
        add(resource, "mimeType", MIME_WAV)
        add(resource, "size", str(len(msg.audio.data)))
        if audio_uri is None:
            add(resource, "uri", msg.audio.file_name)
            add(resource, "derefUri", base64.b64encode(msg.audio.data).decode("ascii"))
        else:
            add(resource, "uri", audio_uri)
        add(resource, "digest", msg.audio.sha1)
    area = add(info, "area")
    add(area, "areaDesc", area_description(msg))
    return alert


def alert_xml(msg: CapMessage, tz: dt.tzinfo, *, audio_uri: str | None = None) -> bytes:
    """The CAP 1.2 document of ``msg`` as UTF-8 bytes, with the XML declaration."""
    ET.register_namespace("", CAP_NS)  # the CAP namespace as the default one: <alert xmlns="...">
    element = alert_element(msg, tz, audio_uri=audio_uri)
    ET.indent(element)
    return ET.tostring(element, encoding="UTF-8", xml_declaration=True) + b"\n"
