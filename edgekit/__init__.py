"""edgekit: split computing on edge devices.

The core package holds what the roles share, one contract per room:

- ``edgekit.bundle``: the bundle (manifest, checked file reads, signatures, ``inspect``/``sign``/``keygen``);
- ``edgekit.wire``: the frame of every version, the feature codecs, the bundle-bound encoder and decoder;
- ``edgekit.mqtt``: broker URLs, topics, the client loop, the broker and its secure config, certificates;
- ``edgekit.auth``: per-device frame keys, tags, the replay window (``edgekit keys``);
- ``edgekit.delivery``: acks and seq ranges, what device and server agree on about arrived frames;

plus the modules every role uses (errors, CLI, logs, runtimes, self-test, preprocessing, CPU facts). Roles
install from their own folders as ``edgekit.converters``, ``edgekit.reencode`` (workstation),
``edgekit.device``, ``edgekit.server`` and ``edgekit.demo``. docs/architecture.md draws the map and its rules.
"""

__version__ = "0.1.0"
