"""The archive page searches by word forms and prefixes, and explains a query it refuses (issue 15 item 6)."""

from __future__ import annotations

from tests.web.conftest import Site


def test_the_archive_page_finds_other_word_forms_and_prefixes(site: Site) -> None:
    burglary = site.message(12, "Opgelet: inbraken in de Kerkstraat.")
    site.message(12, "Verdacht busje in de Molenstraat.")
    client = site.signed_in("admin")
    for q in ("inbraak", "inbr*", "INBRAAK kerkstr*"):
        page = client.get("/archive", params={"q": q})
        assert page.status_code == 200 and "1 bericht(en) gevonden" in page.text, q
        assert f'href="/messages/{burglary}"' in page.text and "<mark>inbraken</mark>" in page.text, q
    page = client.get("/archive", params={"q": "braak*"})  # never the middle of a word
    assert page.status_code == 200 and "0 bericht(en) gevonden" in page.text


def test_the_archive_page_says_why_a_short_prefix_is_refused(site: Site) -> None:
    site.message(12, "Opgelet: inbraken in de Kerkstraat.")
    page = site.signed_in("admin").get("/archive", params={"q": "in*"})
    assert page.status_code == 400
    assert "in*: a prefix search needs at least 3 letters before the *" in page.text
    assert "bericht(en) gevonden" not in page.text
