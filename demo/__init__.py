"""edgekit.demo: ``edgekit demo`` (``command``), the example model it trains (``example_model``), and
``roles``, which starts the server and device roles as subprocesses for the demo, the tests and benchmarks.
"""
