"""WMT17 English→German system outputs: golden data for checking corpus BLEU against sacrebleu's figures.

The source ``wmt17-bleu`` is the PyPI sdist ``sacrebleu==2.6.0``, whose test folder holds
``wmt17_en_de_systems.pkl.bz2``: the newstest2017 German reference and 16 systems' translations,
3,004 segments each. That file is a pickle, so it is unpickled only after its sha256 matched the
pin, by an unpickler that accepts plain lists, tuples and strings and refuses any class; the cache
then holds plain text, one segment per line: ``reference.de`` and ``systems/NAME.de``.

sacrebleu's corpus BLEU (13a tokenizer, exp smoothing) of, e.g., LIUM-NMT is 26.60, FBK 26.33,
KIT 26.08 and C-3MA 22.67; a test checks that `ember.metrics.bleu` gives the same.

Example:
    >>> from ember.data.sources import SOURCES
    >>> SOURCES["wmt17-bleu"].mirrors[0].kind
    'sdist'
"""

from __future__ import annotations

import bz2
import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from ember.data.archives import check_sha256, read_tar_files
from ember.data.bundle import DataError
from ember.data.sources import SOURCES, Mirror, Source, fetch

__all__ = ["WMT17_BLEU", "build_wmt17", "wmt17_systems"]

MEMBER = "sacrebleu-2.6.0/test/wmt17_en_de_systems.pkl.bz2"
SEGMENTS = 3004


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples, strings and numbers only: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"the WMT17 pickle refers to {module}.{name}; only plain data is accepted")


def build_wmt17(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache ``reference.de`` and ``systems/NAME.de`` read out of the sacrebleu sdist's pickle."""
    where = mirror.files[0][0]
    if mirror.kind != "sdist":
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    with tarfile.open(paths[0], mode="r:gz") as tar:
        packed = read_tar_files(tar, [MEMBER], where)[MEMBER]
    check_sha256(packed, source.content[PurePosixPath(MEMBER).name], f"{MEMBER} from {where}")
    # the bytes are the pinned ones: only now is the pickle read (and even then, no classes)
    data = _PlainUnpickler(io.BytesIO(bz2.decompress(packed))).load()
    systems = dict(data)
    references = systems.pop("reference", None)
    if not isinstance(references, list) or len(references) != 1 or len(systems) != 16:
        raise DataError(f"{MEMBER} from {where} does not hold one reference and 16 systems")
    (out / "systems").mkdir()
    for name, lines in [("reference", references[0]), *systems.items()]:
        if len(lines) != SEGMENTS or any("\n" in line for line in lines):
            raise DataError(f"{name} in {MEMBER} is not {SEGMENTS} single-line segments")
        short = name.split(".")[1] if name != "reference" else name  # newstest2017.FBK.4870.en-de
        target = out / "reference.de" if name == "reference" else out / "systems" / f"{short}.de"
        target.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))


def wmt17_systems(*, progress: bool = True) -> tuple[list[str], dict[str, list[str]]]:
    """The German reference and each system's output (by short name, e.g. ``FBK``), 3,004 lines each."""
    folder = fetch("wmt17-bleu", progress=progress)

    def lines(path: Path) -> list[str]:
        return path.read_bytes().decode("utf-8").split("\n")[:-1]  # no newline translation

    systems = {path.stem: lines(path) for path in sorted((folder / "systems").glob("*.de"))}
    return lines(folder / "reference.de"), systems


WMT17_BLEU = Source(
    name="wmt17-bleu",
    description="WMT17 en-de newstest2017: German reference + 16 systems, 3,004 segments (BLEU goldens)",
    mirrors=(
        Mirror(
            "sdist",
            (
                (
                    "https://files.pythonhosted.org/packages/d3/ed/"
                    "d7acddcff74d690c56fe26a1f7828bdde548262828d0743414ea916c40c1/sacrebleu-2.6.0.tar.gz",
                    "91499b6cd46138d95154fff1e863c2f9be57e82f0c719d8dd718d0006cf6c566",
                ),
            ),
        ),
    ),
    content={
        "wmt17_en_de_systems.pkl.bz2": "14832609e37173f0c603a1e27d8fe7af46bcbe6ac0b2a894605d6db98ee117e3"
    },
    build=build_wmt17,
)
SOURCES[WMT17_BLEU.name] = WMT17_BLEU
