"""The web console in-process: sign-in, scopes, every form's bad input, rate limits, audited plays."""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.routing import Route

from ivr.web import routes as web_routes
from ivr.web.i18n import LANGUAGES, catalogue
from ivr.web.pages import base as web_pages_base
from ivr.web.routes import create_app
from storage.db import session_scope
from storage.models import AuditEntry, Message, Person, Recording, RoleAssignment, WebSignInAttempt
from ivr.domain.vocabulary import MessageSource, MessageStatus, Role
from tests.steps import StepLog
from tests.web.conftest import CLIP, PASSWORD, Site, csrf_of, dump, sign_in

TEMPLATES = Path(web_routes.__file__).parent / "templates"


def _count(site: Site, model: type, *where: object) -> int:
    with session_scope(site.engine) as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def _plays(site: Site) -> list[tuple[str, str]]:
    with session_scope(site.engine) as s:
        return [(e.actor, e.subject) for e in s.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording.played").order_by(AuditEntry.id))]


def _member_count(site: Site, bin_id: int) -> int:
    return _count(site, RoleAssignment, RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id)


# -- anonymous visitors ---------------------------------------------------------------------------
def test_every_page_but_the_sign_in_sends_anonymous_visitors_to_sign_in(site: Site) -> None:
    app = create_app(site.console, "k")
    client = site.client()
    checked = 0
    for route in app.routes:
        assert isinstance(route, Route)
        path = route.path.replace("{id:int}", "1").replace("{number:int}", "12").replace("{lang}", "fr")
        for method in sorted(route.methods or ()):
            if method == "HEAD" or route.path == "/signin" or route.path.startswith(("/lang/", "/static/",
                                                                                     "/unsubscribe/")):
                # The sign-in, its language and the scripts (no data in them) are open; so is the e-mail
                # copies' unsubscribe link (its signed token is the authority: tests/web/test_unsubscribe.py).
                continue
            response = client.request(method, path)
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/signin?next="), (method, path)
            checked += 1
    assert checked >= 18
    page = client.get("/signin")
    assert page.status_code == 200 and "Aanmelden" in page.text and 'name="password"' in page.text


def test_the_interface_is_dutch_unless_another_language_is_chosen(site: Site) -> None:
    client = site.client()
    assert "Aanmelden" in client.get("/signin").text
    switched = client.get("/lang/fr", headers={"referer": "http://testserver/signin"})
    assert switched.status_code == 303 and switched.headers["location"] == "/signin"
    page = client.get("/signin")
    assert '<html lang="fr">' in page.text and "Connexion" in page.text and "Aanmelden" not in page.text
    assert client.get("/lang/xx", headers={"referer": "https://elsewhere.example/x"}).headers["location"] == "/x"
    assert '<html lang="fr">' in client.get("/signin").text  # an unknown language changes nothing


def test_sign_in_then_board_then_sign_out(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("police")
    board = client.get("/")
    assert board.status_code == 200
    assert f'href="/messages/{message_id}"' in board.text and "Live overzicht" in board.text
    assert [item["id"] for item in client.get("/board/state").json()] == [message_id]
    out = client.post("/signout", data={"csrf": csrf_of(board.text)})
    assert out.status_code == 303
    assert client.get("/").status_code == 303


def test_a_wrong_password_is_refused_and_audited(site: Site) -> None:
    client = site.client()
    response = sign_in(client, "police", "not the password")
    assert response.status_code == 401 and "niet juist" in response.text  # type: ignore[attr-defined]
    assert client.get("/").status_code == 303
    with session_scope(site.engine) as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.action.like("web.sign_in%")))]
    assert actions == ["web.sign_in_wrong"]
    before = dump(site.engine)
    empty = sign_in(client, " ", "")
    assert empty.status_code == 400 and "Vul uw gebruikersnaam en wachtwoord in" in empty.text  # type: ignore[attr-defined]
    assert dump(site.engine) == before  # not even counted as an attempt


def test_a_session_expires_after_being_idle(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    client = site.signed_in("police")
    assert client.get("/").status_code == 200
    later = web_pages_base._now() + site.settings.web_session_idle_s + 1
    monkeypatch.setattr(web_pages_base, "_now", lambda: later)
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/signin")


# -- rate limits ----------------------------------------------------------------------------------
def test_sign_in_is_locked_per_account_after_three_wrong_passwords(site: Site) -> None:
    client = site.client()
    codes = [sign_in(client, "coord12", f"wrong {i}").status_code for i in range(3)]  # type: ignore[attr-defined]
    assert codes == [401, 401, 429]  # the third wrong one locks
    locked = sign_in(client, "coord12", PASSWORD)  # the right password is not even checked now
    assert locked.status_code == 429 and "Te veel mislukte pogingen" in locked.text  # type: ignore[attr-defined]
    assert client.get("/").status_code == 303
    # Another account from the same address still signs in (3 failures < the address limit of 6).
    assert sign_in(site.client(), "police", PASSWORD).status_code == 303  # type: ignore[attr-defined]
    outcomes = [o.value for o in _outcomes(site, "coord12")]
    assert outcomes == ["wrong", "wrong", "wrong", "locked"]


def test_sign_in_is_locked_per_address_after_many_names_were_tried(site: Site) -> None:
    client = site.client()
    for i in range(6):
        sign_in(client, f"guess{i}", "whatever")
    refused = sign_in(client, "admin", PASSWORD)  # a real account, right password, same address
    assert refused.status_code == 429  # type: ignore[attr-defined]
    assert [o.value for o in _outcomes(site, "admin")] == ["locked"]


def _outcomes(site: Site, username: str) -> list[object]:
    with session_scope(site.engine) as s:
        return list(s.scalars(select(WebSignInAttempt.outcome).where(WebSignInAttempt.username == username)
                              .order_by(WebSignInAttempt.id)))


# -- scopes ---------------------------------------------------------------------------------------
def test_a_coordinator_cannot_see_another_bins_message(site: Site) -> None:
    own = site.message(12)
    other = site.message(99, "Bericht voor elders.")
    client = site.signed_in("coord12")
    assert client.get(f"/messages/{own}").status_code == 200
    for path in (f"/messages/{other}", f"/messages/{other}/audio", f"/messages/{other}/report.csv",
                 f"/messages/{other}/cap.xml"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "geen toegang" in response.text
    assert [item["id"] for item in client.get("/board/state").json()] == [own]
    assert client.get("/bins/99").status_code == 404
    plays = _plays(site)
    assert plays == []  # refused plays send nothing
    # And the coordinator of BIN 99 sees exactly the other one.
    assert [i["id"] for i in site.signed_in("coord99").get("/board/state").json()] == [other]


def test_police_cannot_edit_members(site: Site) -> None:
    client = site.signed_in("police")
    bin_page = client.get("/bins/12")
    assert bin_page.status_code == 200 and "Huishouden 1" in bin_page.text
    assert "/import" not in bin_page.text and "test-call" not in bin_page.text  # no edit controls
    token = csrf_of(client.get("/").text)
    before = dump(site.engine)
    member = site.members[0]
    attempts = [
        client.get(f"/members/{member}"),
        client.post(f"/members/{member}", data={"csrf": token, "name": "X", "phone": "+32470111222",
                                                "second_phone": "", "street": "", "language": "nl"}),
        client.post("/bins/12/members", data={"csrf": token, "name": "X", "phone": "+32470111222",
                                               "second_phone": "", "street": "", "language": "nl"}),
        client.post("/bins/12/import", data={"csrf": token},
                    files={"file": ("leden.csv", b"name,phone\nA,+32470111222\n", "text/csv")}),
        client.post("/bins/12", data={"csrf": token, "name": "Nieuw", "language": "nl", "streets": ""}),
        client.post(f"/members/{member}/test-call", data={"csrf": token}),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert all("Uw rol laat dit niet toe" in r.text for r in attempts)
    assert dump(site.engine) == before


def test_coordinators_do_not_send_and_police_do(site: Site) -> None:
    assert site.signed_in("coord12").get("/send").status_code == 403
    page = site.signed_in("police").get("/send")
    assert page.status_code == 200 and 'name="bins"' in page.text


# -- bad input writes nothing ---------------------------------------------------------------------
def _wav_bytes(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00\xf0\xff" * int(4000 * seconds))
    return buffer.getvalue()


@pytest.mark.parametrize("case", [
    "empty text", "unknown bin", "bin of another zone", "no bin", "text too long", "both text and audio",
    "oversize upload", "far too large a request", "non-audio upload", "no urgency", "no csrf"])
def test_bad_input_on_the_send_form_is_explained_and_writes_nothing(site: Site, case: str) -> None:
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    form = {"csrf": token, "bins": "12", "urgency": "urgent", "text": "Opgelet: inbraken."}
    files = None
    expected = {
        "empty text": (400, "Typ een bericht of kies een audiobestand"),
        "unknown bin": (400, "Geen BIN met nummer of straat &#39;Nergensstraat&#39;"),
        "bin of another zone": (400, "BIN 99 hoort niet bij uw politiezone"),
        "no bin": (400, "Kies minstens één BIN"),
        "text too long": (400, "er kunnen er hoogstens 2000 voorgelezen worden"),
        "both text and audio": (400, "Kies tekst of audio, niet allebei"),
        "oversize upload": (400, "Het bestand is te groot"),
        "far too large a request": (413, "Het bestand is te groot"),
        "non-audio upload": (400, "Het bestand is geen bruikbare audio"),
        "no urgency": (400, "Kies dringend of preventief"),
        "no csrf": (403, "Het formulier is verlopen"),
    }[case]
    if case == "empty text":
        form["text"] = "   "
    elif case == "unknown bin":
        form["bins"] = "Nergensstraat"
    elif case == "bin of another zone":
        form["bins"] = "12, 99"
    elif case == "no bin":
        form["bins"] = ""
    elif case == "text too long":
        form["text"] = "woord " * 500
    elif case == "both text and audio":
        files = {"audio": ("alert.wav", _wav_bytes(), "audio/wav")}
    elif case == "oversize upload":
        form["text"] = ""
        files = {"audio": ("alert.wav", _wav_bytes(19.5), "audio/wav")}  # 312 kB > 300 kB, read and refused
    elif case == "far too large a request":
        form["text"] = ""
        files = {"audio": ("alert.wav", _wav_bytes(30.0), "audio/wav")}  # 480 kB: refused before reading it
    elif case == "non-audio upload":
        form["text"] = ""
        files = {"audio": ("alert.wav", b"this is not audio at all, just words\n" * 50, "audio/wav")}
    elif case == "no urgency":
        form["urgency"] = ""
    elif case == "no csrf":
        form["csrf"] = "forged"
    before = dump(site.engine)
    response = client.post("/send", data=form, files=files)
    assert response.status_code == expected[0]
    assert expected[1] in response.text
    assert dump(site.engine) == before
    assert _count(site, Message) == 0
    if case not in ("no csrf", "far too large a request"):
        # The form keeps what was typed, so the officer can correct it.
        assert 'value="' + form["bins"].replace("'", "&#39;") + '"' in response.text


def test_a_typed_alert_by_street_is_spoken_and_submitted(site: Site) -> None:
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    form = {"csrf": token, "bins": "kerkstraat", "urgency": "preventive",
            "text": "Opgelet:  fietsdiefstallen aan het station."}
    asked = client.post("/send", data=form)  # a street: the BINs it matched are shown first
    confirm = re.findall(r'name="confirm_bins" value="(\d+)"', asked.text)
    assert asked.status_code == 200 and len(confirm) == 1
    response = client.post("/send", data={**form, "confirm_bins": confirm})
    assert response.status_code == 303, response.text
    with session_scope(site.engine) as s:
        [message] = s.scalars(select(Message)).all()
        assert response.headers["location"] == f"/messages/{message.id}"
        assert message.status is MessageStatus.RECORDED and message.source is MessageSource.TEXT
        assert message.text == "Opgelet: fietsdiefstallen aan het station."
        assert message.bin.number == 12 and message.created_by_id == site.world.officer_id
        [recording] = message.recordings
        assert recording.duration_s > 1.0
    page = client.get(f"/messages/{message.id}")
    assert page.status_code == 200 and "fietsdiefstallen" in page.text


def test_in_the_service_a_typed_alert_is_transcribed_and_reviewed_at_once(site: Site) -> None:
    # In the service the console hands a sent message to the chain (transcript, then review) at once.
    after = site.console.after = StepLog()
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    assert client.post("/send", data={"csrf": token, "bins": "12", "urgency": "urgent",
                                      "text": "Opgelet."}).status_code == 303
    with session_scope(site.engine) as s:
        [recording] = s.scalars(select(Recording)).all()
        assert s.get_one(Message, recording.message_id).status is MessageStatus.RECORDED
    assert after.written == [recording.message_id] and after.submissions == [] and after.kept == []


def test_in_the_service_an_uploaded_alert_is_transcribed_and_reviewed_at_once(site: Site) -> None:
    after = site.console.after = StepLog()
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    assert client.post("/send", data={"csrf": token, "bins": "12", "urgency": "urgent", "text": ""},
                       files={"audio": ("bericht.wav", CLIP.read_bytes(), "audio/wav")}).status_code == 303
    with session_scope(site.engine) as s:
        [recording] = s.scalars(select(Recording)).all()
    assert after.kept == [(recording.message_id, recording.id)] and after.submissions == [recording.message_id]


def test_an_uploaded_recording_is_converted_and_submitted(site: Site) -> None:
    client = site.signed_in("admin")
    token = csrf_of(client.get("/send").text)
    response = client.post("/send", data={"csrf": token, "bins": "12, 99", "urgency": "urgent", "text": ""},
                           files={"audio": ("bericht.wav", CLIP.read_bytes(), "audio/wav")})
    assert response.status_code == 303, response.text
    with session_scope(site.engine) as s:
        messages = s.scalars(select(Message).order_by(Message.id)).all()
        assert [m.bin.number for m in messages] == [12, 99]
        assert all(m.status is MessageStatus.RECORDED and len(m.recordings) == 1 for m in messages)
        assert {round(m.recordings[0].duration_s) for m in messages} == {round(_seconds(CLIP))}


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_the_preview_speaks_the_text(site: Site) -> None:
    client = site.signed_in("police")
    audio = client.get("/send/preview", params={"text": "Dit is een proef.", "bins": "12"})
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 8000 * 0.5
    empty = client.get("/send/preview", params={"text": " "})
    assert empty.status_code == 400 and "Typ een bericht" in empty.text


@pytest.mark.parametrize("case", ["bad header", "bad phone on line 3", "empty file", "no file", "not utf-8"])
def test_a_malformed_member_csv_is_refused_line_by_line_and_writes_nothing(site: Site, case: str) -> None:
    data, expected = {
        "bad header": (b"naam,gsm\nAn,0470111222\n", ["line 1: unknown column 'gsm'"]),
        "bad phone on line 3": (b"name,phone\nAn,0470111222\nBen,12\nCis,0470111333\n", ["line 3: phone:"]),
        "empty file": (b"", ["line 1: the file is empty"]),
        "no file": (None, ["Kies een CSV-bestand"]),
        "not utf-8": (b"name,phone\nJos\xe9,0470111222\n", ["line 2: not UTF-8 text"]),
    }[case]
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    files = {"file": ("leden.csv", data, "text/csv")} if data is not None else None
    response = client.post("/bins/12/import", data={"csrf": token}, files=files)
    assert response.status_code == 400
    for text in expected:
        assert text in response.text.replace("&#39;", "'"), response.text
    if data is not None:
        assert "er is niets geïmporteerd" in response.text
    assert dump(site.engine) == before


def test_a_good_member_csv_replaces_the_list(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    csv = "naam,telefoon,straat\nAn Peeters,0470 11 12 22,Kerkstraat 1\nBen Claes,+32470111333,Kerkstraat 2\n" \
          "Cis Maes,0470/11.14.44,\n"
    files = {"file": ("leden.csv", csv.encode(), "text/csv")}
    removing = ",".join(str(i) for i in sorted(site.members))  # replace removes only once confirmed
    response = client.post("/bins/12/import", data={"csrf": token, "mode": "replace", "removing": removing,
                                                    "confirm_remove": "yes"}, files=files)
    assert response.status_code == 303
    page = client.get("/bins/12")
    assert "3 leden: 3 toegevoegd, 0 bijgewerkt, 2 verwijderd." in page.text
    assert _member_count(site, site.world.bin_id) == 3


@pytest.mark.parametrize("case", ["empty name", "bad phone", "same second phone", "bad language"])
def test_bad_member_input_is_explained_and_writes_nothing(site: Site, case: str) -> None:
    client = site.signed_in("admin")
    token = csrf_of(client.get("/bins/12").text)
    form = {"csrf": token, "name": "Dirk", "phone": "0470 22 33 44", "second_phone": "", "street": "", "language": "nl"}
    expected = {"empty name": "De naam is leeg", "bad phone": "Telefoon:", "same second phone": "dezelfde als de eerste",
                "bad language": "Kies een taal"}[case]
    if case == "empty name":
        form["name"] = " "
    elif case == "bad phone":
        form["phone"] = "12"
    elif case == "same second phone":
        form["second_phone"] = "+32470223344"
    else:
        form["language"] = "xx"
    before = dump(site.engine)
    added = client.post("/bins/12/members", data=form)
    edited = client.post(f"/members/{site.members[0]}", data=form)
    assert [added.status_code, edited.status_code] == [400, 400]
    assert expected in added.text and expected in edited.text
    assert dump(site.engine) == before


def test_a_member_is_added_and_edited(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    form = {"csrf": token, "name": "Dirk", "phone": "0470 22 33 44", "second_phone": "", "street": "Kerkstraat 9",
            "language": "fr"}
    assert client.post("/bins/12/members", data=form).status_code == 303
    assert _member_count(site, site.world.bin_id) == 3
    edit = client.get(f"/members/{site.members[0]}")
    assert edit.status_code == 200 and "+3293000001" in edit.text  # full number for the editor (audited)
    form.update(name="Huishouden Een", phone="+3293000001", second_phone="0470 99 88 77")
    assert client.post(f"/members/{site.members[0]}", data=form).status_code == 303
    with session_scope(site.engine) as s:
        person = s.get_one(Person, site.members[0])
        assert person.name == "Huishouden Een" and {p.e164 for p in person.phones} == {
            "+3293000001", "+32470998877"}
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "member.opened")) == 1


def test_a_number_another_household_has_is_refused_also_as_a_second_number(site: Site) -> None:
    """One number, one household: the web applies the command line's rule to first and second numbers."""
    client = site.signed_in("admin")
    token = csrf_of(client.get("/bins/12").text)
    with session_scope(site.engine) as s:
        taken = next(p.e164 for p in s.get_one(Person, site.members[1]).phones)
    form = {"csrf": token, "name": "Dirk", "phone": "0470 22 33 44", "second_phone": taken, "street": "",
            "language": "nl"}
    before = dump(site.engine)
    added = client.post("/bins/12/members", data=form)
    edited = client.post(f"/members/{site.members[0]}", data=form)
    assert [added.status_code, edited.status_code] == [400, 400]
    assert dump(site.engine) == before


def test_a_bin_without_a_name_is_not_saved(site: Site) -> None:
    client = site.signed_in("admin")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    response = client.post("/bins/12", data={"csrf": token, "name": "  ", "language": "nl", "streets": "A\nB"})
    assert response.status_code == 400 and "Geef het BIN een naam" in response.text
    assert dump(site.engine) == before
    assert client.post("/bins/12", data={"csrf": token, "name": "Kerkwijk-Noord", "language": "nl",
                                         "streets": "Kerkstraat\nMolenstraat"}).status_code == 303
    assert "Molenstraat" in client.get("/bins").text


def test_the_test_call_needs_the_running_service(site: Site) -> None:
    client = site.signed_in("admin")
    token = csrf_of(client.get("/bins/12").text)
    response = client.post(f"/members/{site.members[0]}/test-call", data={"csrf": token})
    assert response.status_code == 303
    assert "alleen als de dienst draait" in client.get("/bins/12").text


def test_bad_archive_filters_are_explained(site: Site) -> None:
    client = site.signed_in("police")
    response = client.get("/archive", params={"from": "29-11-2026", "bin": "twaalf"})
    assert response.status_code == 400
    assert "geen datum" in response.text and "Een BIN-nummer bestaat uit cijfers" in response.text


def test_the_archive_finds_typed_words_within_the_viewers_scope(site: Site) -> None:
    mine = site.message(12, "Opgelet: verdacht busje in de Kerkstraat.")
    site.message(99, "Ook een verdacht busje, maar elders.")
    page = site.signed_in("coord12").get("/archive", params={"q": "busje"})
    assert page.status_code == 200 and "1 bericht(en) gevonden" in page.text
    assert f'href="/messages/{mine}"' in page.text
    assert "<mark>busje</mark>" in page.text  # the found word, highlighted (and everything else escaped)
    assert "2 bericht(en) gevonden" in site.signed_in("admin").get("/archive", params={"q": "busje"}).text


def test_the_message_page_says_which_engine_heard_it_and_warns_when_it_is_uncertain(site: Site) -> None:
    import datetime as dt

    from storage.recordings import RecordingStore
    from storage.sealed import TranscriptContent, add_transcript

    key = RecordingStore(site.settings.data_dir / "recordings").key()
    pages = {}
    for uncertain in (False, True):
        message_id = site.message()
        with session_scope(site.engine) as s:
            [take] = s.get_one(Message, message_id).recordings
            add_transcript(s, key, take.id, TranscriptContent("de politie vraagt", [
                {"word": w, "start": i * 0.4, "end": i * 0.4 + 0.3, "conf": 0.9}
                for i, w in enumerate("de politie vraagt".split())]),
                confidence=0.9, model="faster-whisper-base", created_at=dt.datetime.now(dt.timezone.utc),
                engine="whisper", language="nl", uncertain=uncertain)
        pages[uncertain] = site.signed_in("police").get(f"/messages/{message_id}").text
    assert "faster-whisper-base (whisper, nl, 90 %)" in pages[False]
    assert 'id="transcript-uncertain"' not in pages[False]
    assert 'id="transcript-uncertain"' in pages[True] and "Luister naar de opname" in pages[True]


# -- audited plays --------------------------------------------------------------------------------
def test_each_play_of_a_recording_is_audited(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("police")
    page = client.get(f"/messages/{message_id}")
    assert f'src="/messages/{message_id}/audio"' in page.text and 'preload="none"' in page.text
    assert _plays(site) == []  # showing the page plays nothing
    audio = client.get(f"/messages/{message_id}/audio")
    assert audio.status_code == 200 and audio.content == CLIP.read_bytes()
    actor = f"web:person:{site.world.officer_id}"
    assert _plays(site) == [(actor, f"message:{message_id}")]
    # The rest of the same play, fetched by range, is not a new play; a new play from the start is.
    rest = client.get(f"/messages/{message_id}/audio", headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206 and rest.content == CLIP.read_bytes()[1000:]
    assert len(_plays(site)) == 1
    client.get(f"/messages/{message_id}/audio", headers={"Range": "bytes=0-"})
    assert _plays(site) == [(actor, f"message:{message_id}")] * 2


def test_a_changed_recording_is_not_served(site: Site) -> None:
    message_id = site.message()
    with session_scope(site.engine) as s:
        path = Path(s.scalars(select(Recording.path)).one())
    path.write_bytes(path.read_bytes()[:-10])
    client = site.signed_in("admin")
    response = client.get(f"/messages/{message_id}/audio")  # never a byte of a file that is not the original
    assert response.status_code == 500 and "controlesom" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert _plays(site) == []


# -- the catalogue and the command line ----------------------------------------------------------
def test_every_text_the_pages_use_is_in_the_catalogue_in_dutch() -> None:
    texts = catalogue()
    assert all("nl" in entry for entry in texts.values())
    assert set(LANGUAGES) == {"nl", "fr", "de", "en"}
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"t\('([a-z_]+)'", template.read_text(encoding="utf-8")))
    source = "".join(path.read_text(encoding="utf-8")
                     for path in [TEMPLATES.parent / "routes.py", *(TEMPLATES.parent / "pages").glob("*.py")])
    used |= set(re.findall(r'tr\("([a-z_]+)"', source)) | set(re.findall(r'PageError\(\d+, "([a-z_]+)"\)', source))
    fixed = {k for k in used if not k.endswith("_")}
    assert fixed - set(texts) == set()
    assert {"stage_with_coordinators", "seg_confirmed", "state_no_answer", "role_police"} <= set(texts)


def test_the_command_line_creates_an_account_that_signs_in(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from ivr.cli import main

    monkeypatch.setenv("BINFOON_DATABASE_URL", str(site.engine.url))
    monkeypatch.setenv("BINFOON_DATA_DIR", str(site.settings.data_dir))
    secret = tmp_path / "pw.txt"
    secret.write_text("short\n")
    approver = site.world.coordinators[1][0]
    assert main(["web", "user", "add", "--person", str(approver), "--password-file", str(secret)]) == 1
    secret.write_text("een lang genoeg wachtwoord\n")
    assert main(["web", "user", "add", "--person", str(approver), "--password-file", str(secret)]) == 0
    assert main(["web", "user", "add", "--person", str(approver), "--password-file", str(secret)]) == 1  # one each
    client = site.client()
    assert sign_in(client, "coordinator.2", "een lang genoeg wachtwoord").status_code == 303  # type: ignore[attr-defined]
    assert client.get("/").status_code == 200
    # Disabling the account ends its session at once.
    assert main(["web", "user", "disable", "coordinator.2"]) == 0
    assert client.get("/").status_code == 303


def test_coordinators_follow_their_bins_messages_but_replay_is_for_admins_and_zone_police(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("coord12")
    page = client.get(f"/messages/{message_id}")
    assert page.status_code == 200 and 'id="player"' not in page.text and 'id="no-replay"' in page.text
    for path in (f"/messages/{message_id}/audio", f"/messages/{message_id}/cap.xml"):
        refused = client.get(path)
        assert refused.status_code == 403 and "Alleen beheerders en de politie van de zone" in refused.text
    assert _plays(site) == []
    with session_scope(site.engine) as s:
        refusals = [(e.actor, e.action) for e in s.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(("recording.play_refused", "message.export_refused"))).order_by(AuditEntry.id))]
    coordinator = site.world.coordinators[0][0]
    assert refusals == [(f"web:person:{coordinator}", "recording.play_refused"),
                        (f"person:{coordinator}", "message.export_refused")]


def test_police_export_a_message_as_cap(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("police")
    assert f'href="/messages/{message_id}/cap.xml"' in client.get(f"/messages/{message_id}").text
    cap = client.get(f"/messages/{message_id}/cap.xml")
    assert cap.status_code == 200 and cap.headers["content-type"].startswith("application/xml")
    assert b"urn:oasis:names:tc:emergency:cap:1.2" in cap.content
    assert b"inbraken in de Kerkstraat" in cap.content
    assert _count(site, AuditEntry, AuditEntry.action == "message.exported") == 1
