"""CRC-32C (Castagnoli), the checksum of every frame: Google's C implementation, else pure Python.
"""

from __future__ import annotations



def _crc32c_table() -> list[int]:
    """The byte-wise table of the reflected Castagnoli polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes, crc: int = 0) -> int:
    """Pure-Python CRC32C: the fallback where the ``google-crc32c`` wheel has no C extension (slow)."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation (SSE4.2 / ARMv8 CRC instructions) from Google's wheel
    import google_crc32c as _gcrc

    if _gcrc.implementation != "c":
        raise ImportError("google-crc32c has no C extension here")

    def crc32c(data: bytes, crc: int = 0) -> int:
        """CRC-32C (Castagnoli) of ``data``, continuing from ``crc`` (0 to start)."""
        return _gcrc.extend(crc, data)

    CRC32C_IMPLEMENTATION = "google-crc32c"
except ImportError:  # pragma: no cover - exercised only where the wheel is absent
    crc32c = _crc32c_python
    CRC32C_IMPLEMENTATION = "python"
