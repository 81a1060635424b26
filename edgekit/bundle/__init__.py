"""The bundle: the contract between workstation, device and server (docs/bundle.md).

``manifest`` loads and validates a bundle (:class:`~edgekit.bundle.manifest.Bundle`) and writes manifests;
``files`` is the one way a bundle file is read (path rules, size cap, sha256); ``signing`` holds Ed25519
signatures of the manifest and the trust policy; ``commands`` the ``inspect``, ``keygen`` and ``sign`` commands.
"""
