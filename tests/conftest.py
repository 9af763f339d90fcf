"""Shared test fixtures: the kernel builder honours --sanitize."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("dev", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
# CI is derandomised so a failure reproduces; locally hypothesis explores.
settings.load_profile("ci" if os.environ.get("CI") or os.environ.get("CGEN_TEST_DERANDOMIZE", "1") == "1"
                      else "dev")


def pytest_addoption(parser):
    parser.addoption("--sanitize", action="store_true", default=False,
                     help="run host kernels as ASan/UBSan harness executables")


@pytest.fixture(scope="session")
def sanitize(request) -> bool:
    return request.config.getoption("--sanitize")


@pytest.fixture(scope="session")
def kbuild(sanitize):
    """cgen.build, plus a strict clang compile of the same C (gcc builds it strictly already)."""
    from tests.util import build_checked

    def fn(s, args, **kw):
        return build_checked(s, args, sanitize=sanitize, **kw)
    return fn
