"""An uploaded export on disk: copied from the request to a temporary file under a byte cap,
and taken out of a `.zip` (a ChatGPT data export as downloaded) with the same cap, after its
sizes are checked. Nothing is ever read into memory whole."""

import os
import tempfile
import zipfile
from typing import IO

from app.kit.errors import ChatError, ExportTooLarge, NotAnImport

_CHUNK = 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
# A zip member that is more than this many times larger uncompressed is refused: JSON text
# compresses about 5-15 times (a ChatGPT export: 8 times); a zip bomb, thousands.
MAX_ZIP_RATIO = 100
_CONVERSATIONS = "conversations.json"
_ENCRYPTED = 0x1  # the general purpose flag's bit 0
_UNPACKABLE = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)


def spool(source: IO[bytes], *, max_bytes: int) -> IO[bytes]:
    """The upload copied into a temporary file (deleted once closed); ExportTooLarge as soon
    as it passes `max_bytes`."""
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the import, which closes it
    try:
        _copy(source, spooled, max_bytes=max_bytes)
    except BaseException:
        spooled.close()
        raise
    spooled.seek(0)
    return spooled


def _copy(source: IO[bytes], target: IO[bytes], *, max_bytes: int) -> None:
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise ExportTooLarge(max_bytes)
        target.write(chunk)


def unpacked(upload: IO[bytes], *, max_bytes: int) -> IO[bytes]:
    """The JSON of the upload: itself, or the `conversations.json` of a zip (in a temporary
    file of its own; the upload is closed). NotAnImport or ExportTooLarge for a zip that is
    not an export or would unpack too large."""
    upload.seek(0)
    if upload.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
        upload.seek(0)
        return upload
    upload.seek(0)
    try:
        return _member(upload, max_bytes=max_bytes)
    finally:
        upload.close()


def _member(upload: IO[bytes], *, max_bytes: int) -> IO[bytes]:
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise NotAnImport(f"The file is not a readable zip archive: {exc}") from None
    with archive:
        candidates = [
            info
            for info in archive.infolist()
            if os.path.basename(info.filename) == _CONVERSATIONS and not info.is_dir()
        ]
        if not candidates:
            raise NotAnImport(
                f"The zip archive holds no {_CONVERSATIONS}: upload the ChatGPT data export "
                "as downloaded, or its conversations.json"
            )
        # The one nearest the top, if the export was zipped inside a folder.
        info = min(candidates, key=lambda i: i.filename.count("/"))
        # The sizes the archive declares, checked before anything is unpacked; the copy below
        # stops at the cap whatever they claimed.
        if info.file_size > max_bytes:
            raise ExportTooLarge(max_bytes)
        if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise NotAnImport(
                f"{_CONVERSATIONS} in the zip unpacks to more than {MAX_ZIP_RATIO} times its "
                "packed size: refused as a possible zip bomb"
            )
        # zipfile raises RuntimeError and NotImplementedError for these, when opening.
        if info.flag_bits & _ENCRYPTED:
            raise NotAnImport(
                f"{_CONVERSATIONS} in the zip is encrypted: zip it without a password"
            )
        if info.compress_type not in _UNPACKABLE:
            raise NotAnImport(
                f"{_CONVERSATIONS} in the zip is compressed with a method this service cannot "
                "unpack (Deflate64 or AES, say): zip it again with the usual deflate"
            )
        extracted = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the import
        try:
            with archive.open(info) as member:
                _copy(member, extracted, max_bytes=max_bytes)
        except ChatError:
            extracted.close()
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            extracted.close()
            raise NotAnImport(f"The zip archive is damaged: {exc}") from None
    extracted.seek(0)
    return extracted
