"""Frame authentication (docs/security.md): per-device keys (``keys``), the frame MAC and signed messages
(``tags``), the receiver's tag and replay-window check (``authenticator``), and ``edgekit keys`` (``commands``).
"""
