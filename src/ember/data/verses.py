"""English–Spanish verse pairs: the World English Bible and the Reina-Valera 1909, joined by verse.

The source ``en-es-verses`` fetches two pinned Debian packages, ``sword-text-web`` 426.0-1 (module
``engWEB2015eb``, NRSVA versification, with the deuterocanon) and ``sword-text-sparv`` 2.60-1
(``spaRV1909eb``, KJV versification), reads each SWORD module with ``pysword`` and joins the verses
present and non-empty in both by (book, chapter, verse): 31,077 pairs. Reading the modules takes
seconds; the joined pairs are cached once as ``pairs.tsv`` (columns book, chapter, verse, en, es)
in the source's cache folder, which `ember.data.sources.fetch` publishes in one rename.

The modules are OSIS markup. `clean_osis` drops ``<note>`` elements (footnotes), strips every other
tag, and keeps words apart where markup alone separated them: a footnote or a line/paragraph tag
stands for a space, and so does the edge of an ``<transChange>`` (a word the translators added)
touching a letter, unless the added word is a Spanish enclitic pronoun (``sáca<…>lo</…>``).
The RV1909 prints the first word of a chapter in capitals (a drop capital: ``EN el principio``);
`undo_drop_capital` writes that word as an ordinary capitalized word, so chapter starts are not a
separate spelling for a model to learn.

Example:
    >>> clean_osis('<w lemma="strong:H0430">God</w><note placement="foot">Elohim</note><w>created</w>.')
    'God created.'
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ember._io import require
from ember.data.archives import ChecksumError, deb_data_tar
from ember.data.bundle import DataError
from ember.data.sources import SOURCES, Mirror, Source, fetch

__all__ = [
    "EN_ES_VERSES",
    "VersePair",
    "build_verse_pairs",
    "clean_osis",
    "join_verses",
    "read_pairs_tsv",
    "read_sword_module",
    "undo_drop_capital",
    "verse_pairs",
    "write_pairs_tsv",
]

SWORD_ROOT = "usr/share/sword"
WEB_MODULE, RV1909_MODULE = "engWEB2015eb", "spaRV1909eb"
TSV_HEADER = ("book", "chapter", "verse", "en", "es")

Ref = tuple[str, int, int]  # (OSIS book, chapter, verse)

_GAP = "\x00"  # where markup separated words; a space unless punctuation follows
_NOTE = re.compile(r"<note\b[^>]*?(?:/>|>.*?</note>)", re.DOTALL)
_BLOCK = re.compile(
    r"</?(?:div|l|lg|lb|p|chapter|title|item|list|milestone|speaker|head|table|row|cell)\b[^>]*>"
)
_ADDED = re.compile(r"<transChange\b[^>]*>(.*?)</transChange>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_ENCLITIC = re.compile(r"(?:[mts]e|nos|os|l[aeo]s?)+")
_GAP_BEFORE_PUNCT = re.compile(_GAP + r"+(?=\s|$|[,.;:!?)\]”’»])")
_CAPITALS = re.compile(r"\b([A-ZÁÉÍÓÚÑÜ])([A-ZÁÉÍÓÚÑÜ]+)\b")


def clean_osis(text: str) -> str:
    """Plain text of one verse's OSIS markup: notes dropped, tags stripped, spaces normalized."""
    text = _NOTE.sub(_GAP, text)
    text = _BLOCK.sub(" ", text)
    text = _ADDED.sub(_added_words, text)
    text = _TAG.sub("", text)
    text = _GAP_BEFORE_PUNCT.sub("", text).replace(_GAP, " ")
    return " ".join(text.split())


def _added_words(match: re.Match[str]) -> str:
    words = match.group(1)
    if _ENCLITIC.fullmatch(_TAG.sub("", words).strip()):
        return words  # dí<…>lo</…> is one word, "dílo"
    return f"{_GAP}{words}{_GAP}"


def undo_drop_capital(text: str) -> str:
    """The first all-capital word of two or more letters written as a capitalized word.

    Example:
        >>> undo_drop_capital("Salmo de David. ¡OH Jehová")
        'Salmo de David. ¡Oh Jehová'
    """
    return _CAPITALS.sub(lambda m: m.group(1) + m.group(2).lower(), text, count=1)


@dataclass(frozen=True)
class VersePair:
    """One verse in both languages."""

    book: str
    """OSIS book name, e.g. ``Gen``, ``John``."""
    chapter: int
    verse: int
    en: str
    es: str


def read_sword_module(root: str | Path, module: str) -> dict[Ref, str]:
    """Every verse of SWORD module ``module`` under ``root`` (a folder with ``mods.d/``), cleaned.

    Verses are read in the module's own order; empty ones are kept as ``""``.
    """
    SwordModules = require("pysword.modules", "text", what="reading SWORD modules").SwordModules
    modules = SwordModules(str(root))
    found = modules.parse_modules()
    if module not in found:
        raise DataError(f"{root} holds no SWORD module '{module}'; it has {sorted(found)}")
    bible = modules.get_bible_from_module(module)
    # pysword decompresses a module's whole book block for every verse it reads; keeping the last
    # few blocks makes reading a Bible ~100x faster (its reads are otherwise unchanged)
    if hasattr(bible, "_decompressed_text"):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    verses: dict[Ref, str] = {}
    for books in bible.get_structure().get_books().values():
        for book in books:
            for chapter, count in enumerate(book.chapter_lengths, 1):
                for verse in range(1, count + 1):
                    texts = list(bible.get_iter(books=book.name, chapters=chapter, verses=verse, clean=False))
                    verses[(book.osis_name, chapter, verse)] = clean_osis(texts[0]) if texts else ""
    return verses


def join_verses(en: Mapping[Ref, str], es: Mapping[Ref, str]) -> list[VersePair]:
    """Pairs of the references non-empty in both, in ``en``'s order."""
    return [VersePair(*ref, text, es[ref]) for ref, text in en.items() if text and es.get(ref)]


def write_pairs_tsv(pairs: list[VersePair], path: Path) -> None:
    """Write ``pairs`` as UTF-8 TSV with a header (no quoting: verses hold no tab or newline)."""
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("\t".join(TSV_HEADER) + "\n")
        for p in pairs:
            if any(c in s for s in (p.en, p.es) for c in "\t\n\r"):
                raise DataError(f"{p.book} {p.chapter}:{p.verse} holds a tab or a line break")
            file.write(f"{p.book}\t{p.chapter}\t{p.verse}\t{p.en}\t{p.es}\n")


def read_pairs_tsv(path: str | Path) -> list[VersePair]:
    """The pairs of a TSV written by `write_pairs_tsv`."""
    with Path(path).open(encoding="utf-8", newline="") as file:
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = tuple(next(rows, ()))
        if header != TSV_HEADER:
            raise DataError(f"{path} must start with the header {TSV_HEADER}; it has {header}")
        return [VersePair(b, int(c), int(v), en, es) for b, c, v, en, es in rows]


def _extract_module(deb: Path, module: str, folder: Path, where: str) -> None:
    """Copy a package's ``mods.d/*.conf`` and the module's data files into ``folder``.

    Only regular files under the SWORD root are written, each under a name built here from its
    base name, so no member of the archive can place a file outside ``folder``.
    """
    data_path = f"{SWORD_ROOT}/modules/texts/ztext/{module.lower()}"
    written = 0
    with deb_data_tar(deb) as tar:
        for member in tar:
            path = PurePosixPath(member.name.removeprefix("./"))
            if not member.isfile():
                continue
            if str(path.parent) == f"{SWORD_ROOT}/mods.d" and path.suffix == ".conf":
                target = folder / "mods.d" / path.name
            elif str(path.parent).lower() == data_path:
                target = folder / "modules" / "texts" / "ztext" / module / path.name
            else:
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(handle.read())
                written += 1
    if written < 2:
        raise DataError(f"{where} holds no SWORD module '{module}' under {SWORD_ROOT}/")


def build_verse_pairs(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache ``pairs.tsv``: the verses of the WEB (``paths[0]``) and RV1909 (``paths[1]``) packages joined."""
    if mirror.kind != "deb" or len(paths) != 2:
        raise DataError(f"source '{source.name}' reads two .deb files; got a '{mirror.kind}' mirror")
    texts = []
    with tempfile.TemporaryDirectory(prefix="ember-sword-") as work:
        for (url, _), path, module in zip(mirror.files, paths, (WEB_MODULE, RV1909_MODULE)):
            root = Path(work) / module
            _extract_module(path, module, root, url)
            texts.append(read_sword_module(root, module))
    en, es = texts
    es = {ref: undo_drop_capital(text) if ref[2] == 1 else text for ref, text in es.items()}
    pairs = join_verses(en, es)
    buffer = out / "pairs.tsv"
    write_pairs_tsv(pairs, buffer)
    actual, expected = hashlib.sha256(buffer.read_bytes()).hexdigest(), source.content["pairs.tsv"]
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for the verse pairs read from {mirror.files[0][0]}: expected {expected}, "
            f"got {actual} ({len(pairs)} pairs). Nothing was cached."
        )


def verse_pairs(*, progress: bool = True) -> list[VersePair]:
    """The 31,077 English–Spanish verse pairs, fetched and built once (``ember data get en-es-verses``)."""
    path = fetch("en-es-verses", progress=progress) / "pairs.tsv"
    if not path.is_file():
        raise DataError(
            f"the cache {path.parent} is incomplete; delete it and run `ember data get en-es-verses`"
        )
    return read_pairs_tsv(path)


_POOL = "http://deb.debian.org/debian/pool/main/s/"
_WEB_DEB = ("sword-text-web/sword-text-web_426.0-1_all.deb", "d9910dc8fe429d82aa7169560dbf436c71491dc5")
_RV_DEB = ("sword-text-sparv/sword-text-sparv_2.60-1_all.deb", "ed6bfcbf1e7e296b7db0109a85332ed6bb6d143d")
_SHA256 = (
    "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
    "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
)

EN_ES_VERSES = Source(
    name="en-es-verses",
    description="31,077 English-Spanish Bible verse pairs (World English Bible, Reina-Valera 1909; ~9 MB)",
    mirrors=(
        # the Debian archive, then snapshot.debian.org, which keeps every file ever published
        # (addressed by its sha1) after the pool moves on to newer versions
        Mirror("deb", tuple((_POOL + path, sha) for (path, _), sha in zip((_WEB_DEB, _RV_DEB), _SHA256))),
        Mirror(
            "deb",
            tuple(
                (f"https://snapshot.debian.org/file/{sha1}", sha)
                for (_, sha1), sha in zip((_WEB_DEB, _RV_DEB), _SHA256)
            ),
        ),
    ),
    content={
        "pairs.tsv": "e634cce956afad3a409a3eb5d43dca195d1335d79386558756a1af60cebd7cb9"
    },  # sha256 of the TSV
    build=build_verse_pairs,
)
SOURCES[EN_ES_VERSES.name] = EN_ES_VERSES
