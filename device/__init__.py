"""edgekit.device: the device agent (``edgekit device``): run the device half on frames, encode them, spool
and publish over MQTT without losing a frame.
"""
