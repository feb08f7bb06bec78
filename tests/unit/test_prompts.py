"""The prompt catalogue: every prompt in Dutch, French and German; malformed files refused."""

from pathlib import Path

import pytest

from ivr.prompts import LANGUAGES, CatalogueError, load_catalogue


def test_the_shipped_catalogue_is_complete() -> None:
    catalogue = load_catalogue()
    assert catalogue
    for texts in catalogue.values():
        assert set(texts) == set(LANGUAGES) and all(t.strip() for t in texts.values())


@pytest.mark.parametrize(
    "body",
    ['[greet]\nnl = "Hallo"\nfr = "Bonjour"\n', '[Greet]\nnl = "a"\nfr = "b"\nde = "c"\n',
     '[greet]\nnl = "a"\nfr = "b"\nde = "c"\nen = "d"\n', '[greet\n'],
)
def test_malformed_catalogues_are_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(body)
    with pytest.raises(CatalogueError):
        load_catalogue(path)
