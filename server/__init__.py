"""edgekit.server: the receiver (``edgekit server``): validate and decode frames, run the server half in
micro-batches, store and publish results, keep the delivery ledger.
"""
