"""Delivery: what device and server agree on about which frames arrived (docs/device.md, Delivery).

``acks`` encodes and parses the receiver's confirmations; ``ranges`` holds the seq-range arithmetic that the
device's spool, the receiver's store and its ledger share; ``receiver_status`` is the message in which a receiver
says how far behind it is, and ``resend`` the device's rules for sending an unconfirmed frame again.
"""
