"""en-es-verses: OSIS cleaning, and the whole builder on two hand-made SWORD modules in .deb files.

The modules are written here from the zText format (a verse index, a block index, zlib blocks),
at the positions pysword's own versification tables give, so the real reader reads them.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import urllib.error
import zlib
from pathlib import Path

import pytest

from ember.data import sources
from ember.data.archives import ChecksumError
from ember.data.sources import Mirror, Source, SourceUnavailableError, fetch
from ember.data.verses import (
    EN_ES_VERSES,
    VersePair,
    build_verse_pairs,
    clean_osis,
    join_verses,
    read_pairs_tsv,
    undo_drop_capital,
    write_pairs_tsv,
)

pytest.importorskip("pysword")


@pytest.mark.parametrize(
    ("osis", "plain"),
    [
        # a footnote between two words stands for a space; before punctuation, for nothing
        ('<w lemma="strong:H0430">God</w><note placement="foot">Elohim</note><w>created</w>', "God created"),
        ('the cornerstone<note placement="foot"><rdg>head</rdg></note>.', "the cornerstone."),
        # line, paragraph and title markup separates words
        (
            '<title type="psalm">A Psalm.</title><l level="1" sID="x"/>Yahweh<lb type="x-p"/>how',
            "A Psalm. Yahweh how",
        ),
        # an added word glued to its neighbours by markup alone is set apart; an enclitic is not
        (
            'la tierra<transChange type="added">estaba</transChange>desordenada',
            "la tierra estaba desordenada",
        ),
        ('y sáca<transChange type="added">lo</transChange>, y', "y sácalo, y"),
        ('<w>Y dijo</w>  <w>Dios</w>:\n <q marker="">Sea</q>', "Y dijo Dios: Sea"),
    ],
)
def test_clean_osis(osis: str, plain: str) -> None:
    assert clean_osis(osis) == plain


def test_undo_drop_capital() -> None:
    assert undo_drop_capital("EN el principio") == "En el principio"
    assert undo_drop_capital("Salmo de David. ¡OH JEHOVÁ") == "Salmo de David. ¡Oh JEHOVÁ"  # the first only
    assert undo_drop_capital("Y dijo") == "Y dijo"


def test_tsv_round_trip(tmp_path: Path) -> None:
    pairs = [
        VersePair("Gen", 1, 1, "In the beginning", "En el principio"),
        VersePair("John", 3, 16, "For", "Porque"),
    ]
    write_pairs_tsv(pairs, tmp_path / "p.tsv")
    assert read_pairs_tsv(tmp_path / "p.tsv") == pairs


def test_join_keeps_references_in_both() -> None:
    en = {("Gen", 1, 1): "a", ("Gen", 1, 2): "", ("3John", 1, 15): "c", ("Tob", 1, 1): "d"}
    es = {("Gen", 1, 1): "x", ("Gen", 1, 2): "y", ("Gen", 1, 3): "z"}
    assert join_verses(en, es) == [VersePair("Gen", 1, 1, "a", "x")]


# --------------------------------------------------------------------------- hand-made modules

WEB = {  # NRSVA versification: 3 John has 15 verses, and Tobit exists
    ("Gen", 1, 1): '<w lemma="strong:H0430">In</w> <w>the</w> <w>beginning</w>, <w>God</w><note '
    'placement="foot"><reference type="annotateRef">1:1 </reference>“Elohim”</note><w>created</w> the heavens.',
    ("Gen", 1, 2): '<div type="x-milestone" sID="pv1"/>The earth<note n="a">formless</note>. '
    '<l level="1"/>was empty<lb/>and dark.',
    ("Ps", 3, 1): '<title canonical="true" type="psalm">A Psalm by David.</title> <lg/><l/>Yahweh, how!',
    ("Tob", 1, 1): "This book is not in the Spanish module.",
    ("John", 3, 16): '<q who="Jesus"><w>For</w> God so loved the world.</q>',
    ("3John", 1, 15): "Peace be to you.",
}
RV1909 = {  # KJV versification
    ("Gen", 1, 1): "<w>EN el principio</w> <w>crió</w> Dios los cielos.",
    ("Gen", 1, 2): 'y la tierra<transChange type="added">estaba</transChange>desordenada, y sáca'
    '<transChange type="added">lo</transChange>.',
    ("Gen", 1, 3): "Only in Spanish: the English verse is empty.",
    ("Ps", 3, 1): "<w>Salmo</w> de David. ¡<w>OH</w> Jehová!",
    ("John", 3, 16): "Porque de tal manera amó Dios al mundo.",
}
EXPECTED = (
    "book\tchapter\tverse\ten\tes\n"
    "Gen\t1\t1\tIn the beginning, God created the heavens.\tEn el principio crió Dios los cielos.\n"
    "Gen\t1\t2\tThe earth. was empty and dark.\ty la tierra estaba desordenada, y sácalo.\n"
    "Ps\t3\t1\tA Psalm by David. Yahweh, how!\tSalmo de David. ¡Oh Jehová!\n"
    "John\t3\t16\tFor God so loved the world.\tPorque de tal manera amó Dios al mundo.\n"
)


def ztext_files(module: str, versification: str, verses: dict[tuple[str, int, int], str]) -> dict[str, bytes]:
    """A zText module (one zlib block per testament) holding ``verses`` at pysword's indices."""
    from pysword.books import BibleStructure

    structure = BibleStructure(versification)
    by_testament: dict[str, dict[int, bytes]] = {"ot": {}, "nt": {}}
    for (book, chapter, verse), text in verses.items():
        ((testament, (index,)),) = structure.ref_to_indicies(
            books=[book], chapters=[chapter], verses=[verse]
        ).items()
        by_testament[testament][index] = text.encode("utf-8")
    root = f"./usr/share/sword/modules/texts/ztext/{module}"
    files = {
        f"./usr/share/sword/mods.d/{module.lower()}.conf": (
            f"[{module}]\nDataPath=./modules/texts/ztext/{module}/\nModDrv=zText\nSourceType=OSIS\n"
            f"Encoding=UTF-8\nCompressType=ZIP\nBlockType=BOOK\nVersification={versification.upper()}\n"
        ).encode()
    }
    for testament, texts in by_testament.items():
        block, records = b"", []
        for index in range(max(texts, default=0) + 1):
            text = texts.get(index, b"")
            records.append(struct.pack("<IIH", 0, len(block), len(text)))
            block += text
        packed = zlib.compress(block)
        files[f"{root}/{testament}.bzv"] = b"".join(records)
        files[f"{root}/{testament}.bzs"] = struct.pack("<III", 0, len(packed), len(block))
        files[f"{root}/{testament}.bzz"] = packed
    return files


def deb(path: Path, members: dict[str, bytes]) -> Path:
    """A .deb (an ar archive) whose data.tar.xz holds ``members``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in {**members, "./usr/share/doc/x/copyright": b"public domain"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = b"!<arch>\n"
    for name, data in {"debian-binary": b"2.0\n", "data.tar.xz": buffer.getvalue()}.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    path.write_bytes(out)
    return path


def register(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str) -> None:
    web = deb(tmp_path / "web.deb", ztext_files("engWEB2015eb", "nrsva", WEB))
    rv = deb(tmp_path / "rv.deb", ztext_files("spaRV1909eb", "kjv", RV1909))
    files = tuple((p.as_uri(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in (web, rv))
    source = Source("verses-tiny", "test", (Mirror("deb", files),), {"pairs.tsv": content}, build_verse_pairs)
    monkeypatch.setitem(sources.SOURCES, "verses-tiny", source)
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "cache"))


def test_builder_joins_two_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, tmp_path, hashlib.sha256(EXPECTED.encode()).hexdigest())
    folder = fetch("verses-tiny", progress=False)
    assert (folder / "pairs.tsv").read_text(encoding="utf-8") == EXPECTED
    assert [p.book for p in read_pairs_tsv(folder / "pairs.tsv")] == ["Gen", "Gen", "Ps", "John"]


def test_builder_refuses_other_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, tmp_path, "0" * 64)
    with pytest.raises(ChecksumError, match="4 pairs"):
        fetch("verses-tiny", progress=False)
    assert not (tmp_path / "cache" / "verses-tiny").exists()


@pytest.mark.slow
def test_en_es_verses_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Really fetch both packages from Debian (a registry, so reachable in CI) and count the pairs."""
    from dataclasses import replace

    from ember.data.verses import verse_pairs

    monkeypatch.setenv("EMBER_DATA", str(tmp_path))
    monkeypatch.setitem(
        sources.SOURCES, "en-es-verses", replace(EN_ES_VERSES, mirrors=EN_ES_VERSES.mirrors[:1])
    )
    try:
        pairs = verse_pairs(progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        offline = (urllib.error.URLError, ConnectionError, TimeoutError)
        if any(isinstance(r, urllib.error.HTTPError) or not isinstance(r, offline) for r in reasons):
            raise  # the server answered (e.g. 404): a broken pin, not an offline machine
        pytest.skip(f"network unreachable: {reasons[0]}")
    assert len(pairs) == 31_077
    assert pairs[0] == VersePair(
        "Gen", 1, 1, "In the beginning, God created the heavens and the earth.",
        "En el principio crió Dios los cielos y la tierra.",
    )  # fmt: skip
    assert len({p.book for p in pairs}) == 66
