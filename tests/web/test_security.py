"""The console's defences, one test per way in that a review found open."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from ivr.cli import main
from ivr.web import console as web_console
from ivr.web.console import Console
from ivr.web.routes import create_app
from ivr.web.server import WebConsole
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Message, Person, WebSignInAttempt
from ivr.domain.vocabulary import MessageSource, MessageStatus, Urgency
from tests.web.conftest import CLIP, PASSWORD, Site, csrf_of, dump


def _plays(site: Site) -> int:
    with session_scope(site.engine) as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)
                            .where(AuditEntry.action == "recording.played")) or 0)


# -- redirects ------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["/\\evil.example/", "//evil.example/", "https://evil.example/",
                                    "/\t/evil.example", "evil.example"])
def test_sign_in_never_sends_the_browser_to_another_site(site: Site, target: str) -> None:
    client = site.client()
    page = client.get("/signin")
    response = client.post("/signin", data={"csrf": csrf_of(page.text), "username": "police",
                                            "password": PASSWORD, "next": target})
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_the_language_switch_goes_back_to_this_site_only(site: Site) -> None:
    client = site.client()
    for referer in ("http://testserver/\\evil.example/", "http://testserver//evil.example/"):
        assert client.get("/lang/fr", headers={"referer": referer}).headers["location"] == "/"
    assert client.get("/lang/nl", headers={"referer": "http://testserver/archive?q=a"}).headers[
        "location"] == "/archive?q=a"


# -- sessions -------------------------------------------------------------------------------------
def test_a_copied_session_cookie_is_dead_once_its_owner_signs_out(site: Site) -> None:
    client = site.signed_in("police")
    copied = client.cookies.get("binfoon_session")
    assert copied
    assert client.post("/signout", data={"csrf": csrf_of(client.get("/").text)}).status_code == 303
    thief = site.client()
    thief.cookies.set("binfoon_session", copied)
    assert thief.get("/").status_code == 303  # to the sign-in
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "web.sign_out")) == 1


def test_the_session_cookie_can_be_https_only(site: Site) -> None:
    from starlette.testclient import TestClient

    plain = site.client().get("/signin").headers["set-cookie"].lower()
    assert "httponly" in plain and "samesite=strict" in plain and "secure" not in plain
    client = TestClient(create_app(site.console, "k", secure_cookies=True), base_url="https://testserver",
                        follow_redirects=False)
    page = client.get("/signin")
    assert "secure" in page.headers["set-cookie"].lower()
    assert page.headers["strict-transport-security"].startswith("max-age=")


# -- headers and scripts --------------------------------------------------------------------------
def test_no_page_runs_inline_script_and_nothing_is_cached(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("admin")
    for path in ("/", "/send", f"/messages/{message_id}", "/archive", "/bins/12"):
        page = client.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        script_src = re.search(r"script-src ([^;]*)", csp)
        assert script_src is not None and "unsafe-inline" not in script_src.group(1), csp
        assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store", path
        for tag in re.findall(r"<script[^>]*>", page.text):
            assert "src=" in tag, (path, tag)
        for src in re.findall(r'<script src="([^"]+)"', page.text):
            script = client.get(src)
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


def test_the_script_route_serves_only_its_own_files(site: Site) -> None:
    client = site.client()
    for name in ("..%2Froutes.py", "routes.py", "..%2F..%2Fconfig.py", "board.js%00"):
        assert client.get(f"/static/{name}").status_code == 404, name


# -- recordings -----------------------------------------------------------------------------------
def test_a_range_that_continues_no_audited_play_is_a_play_of_its_own(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("police")
    whole = CLIP.read_bytes()
    # All but the first byte, never having played it: the recording is heard, so it is audited.
    sneaky = client.get(f"/messages/{message_id}/audio", headers={"Range": "bytes=1-"})
    assert sneaky.status_code == 206 and sneaky.content == whole[1:]
    assert _plays(site) == 1
    # The rest of that same play is not another one.
    assert client.get(f"/messages/{message_id}/audio", headers={"Range": "bytes=5000-"}).status_code == 206
    assert _plays(site) == 1
    # Another browser (another session) continuing "its" play is a play too.
    other = site.signed_in("admin")
    assert other.get(f"/messages/{message_id}/audio", headers={"Range": "bytes=5000-"}).status_code == 206
    assert _plays(site) == 2


# -- uploads --------------------------------------------------------------------------------------
def _multipart(token: str, audio: bytes) -> tuple[bytes, str]:
    boundary = "binfoonboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (("csrf", token), ("bins", "12"), ("urgency", "urgent"), ("text", ""))]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + audio + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_an_upload_without_a_length_is_refused_at_the_limit(site: Site) -> None:
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    body, content_type = _multipart(token, b"RIFF" + b"\0" * 2_000_000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known by reading
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    before = dump(site.engine)
    response = client.post("/send", content=chunks(), headers={"content-type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "Het bestand is te groot" in response.text
    assert dump(site.engine) == before


async def test_an_endless_upload_is_read_no_further_than_its_limit(site: Site) -> None:
    # The app itself, fed one 64 kB piece at a time as a server does: how much does it pull?
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    head, content_type = _multipart(token, b"RIFF")
    head = head[:head.rindex(b"RIFF") + 4]
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        if pulled > 1000:  # 64 MB against a 300 kB limit
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": b"\0" * 65536, "more_body": True}

    started: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            started.append(int(message["status"]))  # type: ignore[call-overload]

    cookie = client.cookies.get("binfoon_session")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/send", "raw_path": b"/send", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode()),
                         (b"cookie", f"binfoon_session={cookie}".encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    await create_app(site.console, "test-secret-key")(scope, receive, send)
    assert started == [413]
    assert pulled < 20  # about the limit's worth, not the 64 MB
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0


def test_a_playlist_upload_never_reaches_ffmpeg(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[Path] = []
    for step in ("_ffmpeg_guess", "_declared", "_decode"):  # every way into ffmpeg
        monkeypatch.setattr(web_console, step, lambda source, *args: converted.append(source))
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    playlist = (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
                b"file:///var/lib/binfoon/recordings/other-zone.wav\n#EXT-X-ENDLIST\n")
    before = dump(site.engine)
    response = client.post("/send", data={"csrf": token, "bins": "12", "urgency": "urgent", "text": ""},
                           files={"audio": ("alert.wav", playlist, "audio/wav")})
    assert response.status_code == 400 and "Het bestand is geen bruikbare audio" in response.text
    assert converted == []
    assert dump(site.engine) == before


def test_a_sign_in_with_a_huge_body_is_refused_unread(site: Site) -> None:
    client = site.client()
    token = csrf_of(client.get("/signin").text)
    response = client.post("/signin", data={"csrf": token, "username": "police", "password": "x" * 2_000_000})
    assert response.status_code == 413
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(WebSignInAttempt)) == 0


# -- scope ----------------------------------------------------------------------------------------
def test_the_board_shows_a_coordinators_message_behind_many_of_other_bins(site: Site) -> None:
    own = site.message(12)
    with session_scope(site.engine) as s:
        other = s.scalars(select(Bin).where(Bin.number == 99)).one()
        now = dt.datetime.now(dt.UTC)
        s.add_all([Message(bin_id=other.id, urgency=Urgency.URGENT, status=MessageStatus.WITH_COORDINATORS,
                           source=MessageSource.TEXT, text=f"elders {i}", created_at=now) for i in range(60)])
    assert [item["id"] for item in site.signed_in("coord12").get("/board/state").json()] == [own]


async def test_the_live_stream_ends_when_the_account_is_disabled(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.message()
    web = WebConsole(Console.standalone(site.settings, site.engine), "127.0.0.1", 0)
    url = await web.start()
    monkeypatch.setenv("BINFOON_DATABASE_URL", str(site.engine.url))
    monkeypatch.setenv("BINFOON_DATA_DIR", str(site.settings.data_dir))
    try:
        async with httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=20) as client:
            page = await client.get("/signin")
            await client.post("/signin", data={"csrf": csrf_of(page.text), "username": "coord12",
                                               "password": PASSWORD, "next": "/"})

            async def read_until_end() -> int:
                boards = 0
                async with client.stream("GET", "/board/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            boards += 1
                            if boards == 1:
                                assert await asyncio.to_thread(main, ["web", "user", "disable", "coord12"]) == 0
                return boards

            began = time.monotonic()
            assert await asyncio.wait_for(read_until_end(), 10) == 1
            assert time.monotonic() - began < 8
            assert (await client.get("/board/events")).status_code == 303
    finally:
        await web.stop()


# -- members --------------------------------------------------------------------------------------
def test_a_number_already_in_the_bin_is_not_added_twice(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    form = {"csrf": token, "name": "Dubbel", "phone": "+3293000001", "second_phone": "", "street": "",
            "language": "nl"}
    added = client.post("/bins/12/members", data=form)
    assert added.status_code == 400 and "al van een ander huishouden in BIN 12" in added.text
    edited = client.post(f"/members/{site.members[1]}", data=form)  # household 2 taking household 1's number
    assert edited.status_code == 400 and "al van een ander huishouden" in edited.text
    assert dump(site.engine) == before
    # A household keeps its own number when it is edited.
    assert client.post(f"/members/{site.members[0]}", data={**form, "name": "Huishouden Een"}).status_code == 303
    with session_scope(site.engine) as s:
        assert s.get_one(Person, site.members[0]).name == "Huishouden Een"


# -- speech ---------------------------------------------------------------------------------------
async def test_in_the_service_speech_runs_in_the_renderers_processes(site: Site,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    async def text_wav(text: str, language: str) -> Path:
        asked.append((text, language))
        return CLIP

    def in_this_process(*args: object) -> Path:
        raise AssertionError("espeak-ng ran in the service's own process")

    monkeypatch.setattr(web_console, "_speak_locked", in_this_process)
    app = SimpleNamespace(renderer=SimpleNamespace(text_wav=text_wav))
    console = dataclasses.replace(site.console, app=app)  # type: ignore[arg-type]
    assert await console.spoken("Dit is een proef.", "nl") == CLIP.read_bytes()
    assert asked == [("Dit is een proef.", "nl")]


# -- polyglot uploads -----------------------------------------------------------------------------
_ID3_EMPTY = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an ID3v2.4 header announcing a tag of 0 bytes
_TONE_HZ = 1000


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _tone_mp3(folder: Path) -> Path:
    """Another zone's recording, as the attacker would name it: a 2.7 s tone anyone can recognise."""
    other = folder / "other-zone.mp3"
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={_TONE_HZ}:duration=2.7", "-ar", "8000", "-ac", "1", str(other))
    return other


def _has_tone(path: Path) -> bool:
    """Whether a WAV is mostly the attacker's tone (its strongest frequency is ``_TONE_HZ``)."""
    with wave.open(str(path), "rb") as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
        width = w.getsampwidth()
    if width != 2 or len(frames) < rate:
        return False
    samples = np.frombuffer(frames, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    peak = float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])
    return abs(peak - _TONE_HZ) < 20


def _polyglots(other: Path) -> dict[str, bytes]:
    """Files that start like an mp3 (an ID3 tag) but are playlists naming ``other`` by absolute path."""
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\n{other}\n#EXT-X-ENDLIST\n".encode()
    return {
        "id3+m3u": _ID3_EMPTY + f"#EXTM3U\n#EXTINF:1,\n{other}\n".encode(),
        "id3+hls": _ID3_EMPTY + hls,
        "id3+hls file url": _ID3_EMPTY + hls.replace(str(other).encode(), f"file://{other}".encode()),
        "id3+ffconcat": _ID3_EMPTY + f"ffconcat version 1.0\nfile '{other}'\n".encode(),
        # The playlist followed by real mp3 frames: decodable as mp3, yet ffmpeg's own guess is HLS.
        "id3+hls+frames": _ID3_EMPTY + hls + other.read_bytes(),
    }


@pytest.mark.parametrize("kind", ["id3+m3u", "id3+hls", "id3+hls file url", "id3+ffconcat", "id3+hls+frames"])
def test_an_id3_prefixed_playlist_upload_is_refused_and_pulls_in_no_other_file(site: Site, kind: str) -> None:
    other = _tone_mp3(site.tmp)
    polyglot = _polyglots(other)[kind]
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    before = dump(site.engine)
    response = client.post("/send", data={"csrf": token, "bins": "12", "urgency": "urgent", "text": ""},
                           files={"audio": ("alert.mp3", polyglot, "audio/mpeg")})
    assert response.status_code == 400 and "Het bestand is geen bruikbare audio" in response.text
    assert dump(site.engine) == before
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0
    # Stronger: the other zone's audio is in no file the console left behind.
    stored = [p for p in site.tmp.rglob("*") if p.is_file() and p.suffix == ".wav"]
    assert not [p for p in stored if _has_tone(p)]
    # And the converter itself refuses it, whoever calls it.
    with pytest.raises(web_console.NotAudio):
        web_console.convert_upload(_write(site.tmp / "poly.bin", polyglot), site.tmp / "out.wav", 120.0)
    assert not (site.tmp / "out.wav").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_id3_tagged_mp3_is_still_accepted(site: Site) -> None:
    tagged = site.tmp / "tagged.mp3"
    _ffmpeg("-i", str(CLIP), "-metadata", "title=Inbraken Kerkstraat", "-id3v2_version", "3", str(tagged))
    assert tagged.read_bytes()[:3] == b"ID3"
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    response = client.post("/send", data={"csrf": token, "bins": "12", "urgency": "urgent", "text": ""},
                           files={"audio": ("bericht.mp3", tagged.read_bytes(), "audio/mpeg")})
    assert response.status_code == 303, response.text
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 1
    with wave.open(str(CLIP), "rb") as w:
        original = w.getnframes() / w.getframerate()
    converted = web_console.convert_upload(tagged, site.tmp / "again.wav", 120.0)
    assert abs(converted - original) < 0.2


def test_a_file_ffmpeg_alone_would_read_as_a_playlist_is_refused_even_past_the_frame_check(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each defence holds by itself: here the byte check is waved through, ffmpeg's own guess (HLS) refuses it.
    other = _tone_mp3(site.tmp)
    monkeypatch.setattr(web_console, "_mpeg_frames_follow", lambda path: True)
    decoded: list[Path] = []
    monkeypatch.setattr(web_console, "_decode", lambda source, *args: decoded.append(source))
    for kind in ("id3+hls", "id3+hls+frames"):
        with pytest.raises(web_console.NotAudio):
            web_console.convert_upload(_write(site.tmp / "poly.bin", _polyglots(other)[kind]), site.tmp / "o.wav", 9.0)
    assert decoded == []
