"""G.711 (ITU-T G.711) decode tables, shared by both packet readers' ``payload_rms``."""

from __future__ import annotations

import numpy as np

PAYLOAD_TYPES = {0: "pcmu", 8: "pcma"}  # RTP's static payload types (RFC 3551)


def _decode_tables() -> dict[str, np.ndarray]:
    """Decode tables for G.711 mu-law and A-law bytes to 16-bit linear samples (ITU-T G.711)."""
    codes = np.arange(256)
    u = ~codes & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    mulaw = ((mantissa << 3) + 0x84) << exponent
    mulaw = np.where(u & 0x80, 0x84 - mulaw, mulaw - 0x84)
    a = codes ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    alaw = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    alaw = np.where(a & 0x80, alaw, -alaw)
    return {"pcmu": mulaw.astype(float), "pcma": alaw.astype(float)}


DECODE = _decode_tables()  # codec name -> the linear sample of each of the 256 byte values
