"""edgekit: split computing on edge devices.

The core package holds what all three roles share: the bundle (manifest) format, the wire frame format and
feature codecs, and the CLI. Roles live in sub-packages that install from their own folders:
``edgekit.converters`` (workstation, ``converters/``), ``edgekit.device`` (Raspberry Pi agent, ``device/``)
and ``edgekit.server`` (receiver).
"""

__version__ = "0.1.0"
