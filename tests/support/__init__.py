"""What tests in several folders share: fixtures (registered in tests/conftest.py) and helpers."""
