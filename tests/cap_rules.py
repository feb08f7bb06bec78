"""Our own conformance checker for OASIS Common Alerting Protocol 1.2 documents (test helper).

Written from the rules of the CAP 1.2 specification (CAP-v1.2-os, section 3: the document object
model and the data dictionary), not from any published schema file. ``cap_errors`` returns one
readable string per violation; an empty list means the document conforms to the rules checked here:

* the CAP 1.2 namespace on every element, no attributes, no stray text, no unknown elements;
* each element's children in the order the data dictionary lists them, with their cardinalities;
* the enumerated values (status, msgType, scope, category, responseType, urgency, severity, certainty);
* the conditional rules: ``restriction`` when (and only when) the scope is Restricted, ``addresses``
  when the scope is Private, ``ceiling`` only together with ``altitude``;
* the value forms: CAP times (``2027-01-01T13:00:00+01:00``: offset always present, no "Z", no fraction),
  identifier and sender without whitespace, commas, "<" or "&", ``references`` as space-separated
  "sender,identifier,sent" triples, integer sizes, SHA-1 hex digests, base64 ``derefUri`` content,
  WGS 84 polygons and circles, decimal altitudes.

Only the standard library (``xml.etree``) is used.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
#: XML Signature / Encryption elements the spec allows after the last ``info`` of an ``alert``.
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
XMLENC_NS = "http://www.w3.org/2001/04/xmlenc#"

STATUS = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPE = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPE = ("Public", "Restricted", "Private")
CATEGORY = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
            "CBRNE", "Other")
RESPONSE_TYPE = ("Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear",
                 "None")
URGENCY = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTY = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

UNBOUNDED = -1


@dataclass(frozen=True)
class Slot:
    """One position of an element's content: child ``name``, between ``least`` and ``most`` times."""

    name: str
    least: int = 1
    most: int = 1  # UNBOUNDED for "any number"


def _opt(name: str) -> Slot:
    return Slot(name, 0, 1)


def _many(name: str, least: int = 0) -> Slot:
    return Slot(name, least, UNBOUNDED)


#: The children of each CAP container element, in the order the specification requires.
CONTENT: dict[str, tuple[Slot, ...]] = {
    "alert": (Slot("identifier"), Slot("sender"), Slot("sent"), Slot("status"), Slot("msgType"),
              _opt("source"), Slot("scope"), _opt("restriction"), _opt("addresses"), _many("code"),
              _opt("note"), _opt("references"), _opt("incidents"), _many("info")),
    "info": (_opt("language"), _many("category", 1), Slot("event"), _many("responseType"), Slot("urgency"),
             Slot("severity"), Slot("certainty"), _opt("audience"), _many("eventCode"), _opt("effective"),
             _opt("onset"), _opt("expires"), _opt("senderName"), _opt("headline"), _opt("description"),
             _opt("instruction"), _opt("web"), _opt("contact"), _many("parameter"), _many("resource"),
             _many("area")),
    "resource": (Slot("resourceDesc"), Slot("mimeType"), _opt("size"), _opt("uri"), _opt("derefUri"),
                 _opt("digest")),
    "area": (Slot("areaDesc"), _many("polygon"), _many("circle"), _many("geocode"), _opt("altitude"),
             _opt("ceiling")),
    "eventCode": (Slot("valueName"), Slot("value")),
    "parameter": (Slot("valueName"), Slot("value")),
    "geocode": (Slot("valueName"), Slot("value")),
}

#: Enumerated leaf values, by element name.
ENUMS: dict[str, tuple[str, ...]] = {
    "status": STATUS, "msgType": MSG_TYPE, "scope": SCOPE, "category": CATEGORY,
    "responseType": RESPONSE_TYPE, "urgency": URGENCY, "severity": SEVERITY, "certainty": CERTAINTY,
}

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
_FORBIDDEN_IN_TOKEN = re.compile(r"[\s,<&]")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
_INTEGER = re.compile(r"\d+")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_SHA1 = re.compile(r"[0-9A-Fa-f]{40}")
_POINT = re.compile(r"([+-]?\d+(?:\.\d+)?),([+-]?\d+(?:\.\d+)?)")


def cap_errors(document: bytes | str | ET.Element) -> list[str]:
    """Every way ``document`` (XML text, or a parsed ``<alert>``) breaks the CAP 1.2 rules; ``[]`` if none."""
    if isinstance(document, ET.Element):
        root = document
    else:
        try:
            root = ET.fromstring(document)
        except ET.ParseError as exc:
            return [f"not well-formed XML: {exc}"]
    if root.tag != _q("alert"):
        return [f"the root element is {root.tag}, not {{{CAP_NS}}}alert"]
    errors: list[str] = []
    _check_alert(root, errors)
    return errors


# -- structure -----------------------------------------------------------------------------------


def _q(name: str) -> str:
    """``name`` in the CAP namespace, as ElementTree spells it."""
    return f"{{{CAP_NS}}}{name}"


def _local(element: ET.Element) -> str:
    """The element's name without the CAP namespace (foreign names keep their ``{namespace}``)."""
    tag = element.tag if isinstance(element.tag, str) else repr(element.tag)
    return tag[len(CAP_NS) + 2:] if tag.startswith(f"{{{CAP_NS}}}") else tag


def _is_signature(element: ET.Element) -> bool:
    return isinstance(element.tag, str) and element.tag.startswith((f"{{{XMLDSIG_NS}}}", f"{{{XMLENC_NS}}}"))


def _check_content(path: str, element: ET.Element, errors: list[str]) -> dict[str, list[ET.Element]]:
    """Check ``element``'s children against ``CONTENT``: order, cardinality, no stray text or attributes.

    Returns the children matched, by name, for the value checks that follow.
    """
    name = _local(element)
    if element.attrib:
        errors.append(f"{path}: CAP elements carry no attributes, found {sorted(element.attrib)}")
    if (element.text or "").strip():
        errors.append(f"{path}: text {element.text.strip()[:40]!r} where only elements are allowed")
    children = list(element)
    if name == "alert":  # a digital signature or encryption may follow the CAP content
        while children and _is_signature(children[-1]):
            children.pop()
    for child in children:
        if (child.tail or "").strip():
            errors.append(f"{path}: text {child.tail.strip()[:40]!r} after <{_local(child)}>")
    found: dict[str, list[ET.Element]] = {}
    position = 0
    for slot in CONTENT[name]:
        matched: list[ET.Element] = []
        while (position < len(children) and children[position].tag == _q(slot.name)
               and (slot.most == UNBOUNDED or len(matched) < slot.most)):
            matched.append(children[position])
            position += 1
        if len(matched) < slot.least:
            where = f" (found <{_local(children[position])}> instead)" if position < len(children) else ""
            errors.append(f"{path}: missing required <{slot.name}>{where}")
        found[slot.name] = matched
    if position < len(children):
        child = _local(children[position])
        if any(child == slot.name for slot in CONTENT[name]):
            expected = " ".join(f"<{slot.name}>" for slot in CONTENT[name])
            errors.append(f"{path}: <{child}> is out of order or repeated (the order is {expected})")
        else:
            errors.append(f"{path}: <{child}> is not a CAP 1.2 child of <{name}>")
    return found


def _leaf(path: str, element: ET.Element, errors: list[str]) -> str:
    """The text of a simple-content element (checked to have no children or attributes)."""
    if element.attrib:
        errors.append(f"{path}: CAP elements carry no attributes, found {sorted(element.attrib)}")
    if len(element):
        errors.append(f"{path}: holds <{_local(element[0])}> but only text is allowed")
    return element.text or ""


def _values(path: str, found: dict[str, list[ET.Element]], name: str, errors: list[str]) -> list[str]:
    """The texts of the ``name`` children in ``found``, each enum-checked when ``name`` is enumerated."""
    texts = []
    for index, element in enumerate(found.get(name, [])):
        where = f"{path}/{name}" if len(found[name]) == 1 else f"{path}/{name}[{index + 1}]"
        text = _leaf(where, element, errors)
        if name in ENUMS and text not in ENUMS[name]:
            errors.append(f"{where}: {text!r} is not one of {', '.join(ENUMS[name])}")
        texts.append(text)
    return texts


def _one(values: list[str]) -> str | None:
    return values[0] if values else None


# -- the elements ----------------------------------------------------------------------------------


_ALERT_LEAVES = ("identifier", "sender", "sent", "status", "msgType", "source", "scope", "restriction",
                 "addresses", "code", "note", "references", "incidents")


def _check_alert(alert: ET.Element, errors: list[str]) -> None:
    found = _check_content("alert", alert, errors)
    values = {name: _values("alert", found, name, errors) for name in _ALERT_LEAVES}
    for name in ("identifier", "sender"):
        if (value := _one(values[name])) is not None:
            _check_token(f"alert/{name}", value, errors)
    if (sent := _one(values["sent"])) is not None:
        _check_time("alert/sent", sent, errors)
    scope = _one(values["scope"])
    if scope == "Restricted" and not found["restriction"]:
        errors.append("alert: scope Restricted requires <restriction>")
    if scope is not None and scope != "Restricted" and found["restriction"]:
        errors.append(f"alert: <restriction> is only used with scope Restricted, not {scope}")
    if scope == "Private" and not found["addresses"]:
        errors.append("alert: scope Private requires <addresses>")
    if (references := _one(values["references"])) is not None:
        _check_references("alert/references", references, errors)
    for index, info in enumerate(found["info"]):
        _check_info(f"alert/info[{index + 1}]", info, errors)


def _check_info(path: str, info: ET.Element, errors: list[str]) -> None:
    found = _check_content(path, info, errors)
    for name in ("category", "event", "responseType", "urgency", "severity", "certainty", "audience",
                 "senderName", "headline", "description", "instruction", "web", "contact"):
        _values(path, found, name, errors)
    if (language := _one(_values(path, found, "language", errors))) is not None and not _LANGUAGE.fullmatch(
            language):
        errors.append(f"{path}/language: {language!r} is not an RFC 3066 language code")
    for name in ("effective", "onset", "expires"):
        if (value := _one(_values(path, found, name, errors))) is not None:
            _check_time(f"{path}/{name}", value, errors)
    for name in ("eventCode", "parameter"):
        for index, pair in enumerate(found[name]):
            _check_pair(f"{path}/{name}[{index + 1}]", pair, errors)
    for index, resource in enumerate(found["resource"]):
        _check_resource(f"{path}/resource[{index + 1}]", resource, errors)
    for index, area in enumerate(found["area"]):
        _check_area(f"{path}/area[{index + 1}]", area, errors)


def _check_pair(path: str, pair: ET.Element, errors: list[str]) -> None:
    """``eventCode``, ``parameter`` and ``geocode``: a ``valueName`` and its ``value``."""
    found = _check_content(path, pair, errors)
    _values(path, found, "valueName", errors)
    _values(path, found, "value", errors)


def _check_resource(path: str, resource: ET.Element, errors: list[str]) -> None:
    found = _check_content(path, resource, errors)
    for name in ("resourceDesc", "mimeType", "uri"):
        _values(path, found, name, errors)
    if (size := _one(_values(path, found, "size", errors))) is not None and not _INTEGER.fullmatch(size):
        errors.append(f"{path}/size: {size!r} is not a whole number of bytes")
    if (deref := _one(_values(path, found, "derefUri", errors))) is not None:
        try:
            base64.b64decode("".join(deref.split()), validate=True)
        except (binascii.Error, ValueError):
            errors.append(f"{path}/derefUri: not base64-encoded content")
    if (digest := _one(_values(path, found, "digest", errors))) is not None and not _SHA1.fullmatch(digest):
        errors.append(f"{path}/digest: {digest[:48]!r} is not a SHA-1 digest (40 hex digits)")


def _check_area(path: str, area: ET.Element, errors: list[str]) -> None:
    found = _check_content(path, area, errors)
    _values(path, found, "areaDesc", errors)
    for index, polygon in enumerate(_values(path, found, "polygon", errors)):
        _check_polygon(f"{path}/polygon[{index + 1}]", polygon, errors)
    for index, circle in enumerate(_values(path, found, "circle", errors)):
        _check_circle(f"{path}/circle[{index + 1}]", circle, errors)
    for index, geocode in enumerate(found["geocode"]):
        _check_pair(f"{path}/geocode[{index + 1}]", geocode, errors)
    for name in ("altitude", "ceiling"):
        if (value := _one(_values(path, found, name, errors))) is not None and not _DECIMAL.fullmatch(value):
            errors.append(f"{path}/{name}: {value!r} is not a decimal number")
    if found["ceiling"] and not found["altitude"]:
        errors.append(f"{path}: <ceiling> may only be used together with <altitude>")


# -- value forms -----------------------------------------------------------------------------------


def _check_token(path: str, value: str, errors: list[str]) -> None:
    """``identifier`` and ``sender``: non-empty, no whitespace, commas, "<" or "&"."""
    if not value:
        errors.append(f"{path}: empty")
    elif _FORBIDDEN_IN_TOKEN.search(value):
        errors.append(f"{path}: {value!r} may not contain spaces, commas, '<' or '&'")


def _check_time(path: str, value: str, errors: list[str]) -> None:
    """A CAP time: ``YYYY-MM-DDThh:mm:ss`` and a ``±hh:mm`` offset, no "Z", no fractional seconds."""
    if not _TIME.fullmatch(value):
        errors.append(f"{path}: {value!r} is not a CAP time (YYYY-MM-DDThh:mm:ss±hh:mm, no 'Z', "
                      "no fractional seconds)")
        return
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        errors.append(f"{path}: {value!r} is not a real date and time")
        return
    offset = when.utcoffset()
    if offset is not None and abs(offset) > dt.timedelta(hours=14):
        errors.append(f"{path}: {value!r} has an offset beyond ±14:00")


def _check_references(path: str, value: str, errors: list[str]) -> None:
    """Space-separated ``sender,identifier,sent`` triples."""
    triples = value.split()
    if not triples:
        errors.append(f"{path}: empty (leave the element out when nothing is referenced)")
    for triple in triples:
        parts = triple.split(",")
        if len(parts) != 3:
            errors.append(f"{path}: {triple!r} is not a sender,identifier,sent triple")
            continue
        sender, identifier, sent = parts
        _check_token(f"{path} sender", sender, errors)
        _check_token(f"{path} identifier", identifier, errors)
        _check_time(f"{path} sent", sent, errors)


def _points(path: str, text: str, errors: list[str]) -> list[tuple[float, float]] | None:
    """The WGS 84 ``lat,lon`` points of a space-separated list, or ``None`` (and an error) if malformed."""
    points = []
    for pair in text.split():
        match = _POINT.fullmatch(pair)
        if match is None:
            errors.append(f"{path}: {pair!r} is not a lat,lon pair")
            return None
        lat, lon = float(match[1]), float(match[2])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            errors.append(f"{path}: {pair!r} is outside WGS 84 latitude/longitude ranges")
            return None
        points.append((lat, lon))
    return points


def _check_polygon(path: str, value: str, errors: list[str]) -> None:
    """At least four points, the first and the last the same (a closed ring)."""
    points = _points(path, value, errors)
    if points is None:
        return
    if len(points) < 4:
        errors.append(f"{path}: a polygon needs at least four points, found {len(points)}")
    elif points[0] != points[-1]:
        errors.append(f"{path}: the first and last points of a polygon must be the same")


def _check_circle(path: str, value: str, errors: list[str]) -> None:
    """A ``lat,lon`` centre, a space, and a radius in kilometres."""
    parts = value.split()
    if len(parts) != 2:
        errors.append(f"{path}: {value!r} is not 'lat,lon radius'")
        return
    centre, radius = parts
    _points(path, centre, errors)
    if not _DECIMAL.fullmatch(radius):
        errors.append(f"{path}: radius {radius!r} is not a number of kilometres")
    elif float(radius) < 0:
        errors.append(f"{path}: radius {radius!r} is negative")
