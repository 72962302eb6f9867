"""Test configuration: hypothesis profiles and the shared strategies.

With ``--import-mode=importlib`` pytest does not put ``tests/`` on ``sys.path``; the tests import
their helpers (``reference``, ``strategies``) as top-level modules, so the directory is added here.

Profiles (select with ``FASTDEC_HYPOTHESIS_PROFILE``): ``fastdec`` (default, the whole suite in
well under a minute) and ``thorough`` (20x the examples, for a nightly run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

from strategies import (  # noqa: F401  (re-exported for the tests)
    TreeCase,
    acceptance_tables,
    as_container,
    containers,
    fuzz_arrays,
    invalid_trees,
    rank_paths,
    score_containers,
    trees,
)

settings.register_profile(
    "fastdec",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("fastdec"), max_examples=800)
settings.load_profile(os.environ.get("FASTDEC_HYPOTHESIS_PROFILE", "fastdec"))
