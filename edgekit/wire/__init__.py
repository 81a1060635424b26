"""The wire: the contract between device and server, one frame per code (docs/wire-format.md).

``frame_v1`` and ``frame_v2`` pack and check headers; ``errors`` names every rejection; ``crc`` is the
checksum; ``codecs/`` compress the code; ``spec`` is what a bundle fixes about its frames; ``encoder`` (device)
and ``decoder`` (server) bind them together.
"""
