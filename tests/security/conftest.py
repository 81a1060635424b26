"""Security tests reuse the pipeline's fixtures: a real Mosquitto per test, one real converted bundle per
session, a collector, and the helpers (loaded from tests/pipeline, not copied)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
sys.path.insert(0, str(_PIPELINE))  # pipeline_helpers
_spec = importlib.util.spec_from_file_location("pipeline_conftest", _PIPELINE / "conftest.py")
_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pipeline)

pytest_runtest_makereport = _pipeline.pytest_runtest_makereport
mosquitto_factory = _pipeline.mosquitto_factory
mosquitto = _pipeline.mosquitto
collector = _pipeline.collector
bundle = _pipeline.bundle
stream = _pipeline.stream
