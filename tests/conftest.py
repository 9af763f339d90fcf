"""Shared test fixtures: the kernel builder honours --sanitize; @pytest.mark.isa skips what
this CPU cannot run; the header says which target `host` is (CGEN_HOST or detected)."""
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


# isa("avx512") means "this CPU runs x86-avx512 code"; a built-in target name works too.
ISA_TARGETS = {"avx2": "x86-avx2", "avx512": "x86-avx512", "neon": "aarch64"}


def pytest_configure(config):
    config.addinivalue_line("markers", "isa(name): needs this CPU to run that ISA's code "
                            "(avx2, avx512, neon or a built-in target name); skipped otherwise")
    from targets import resolve
    try:
        resolve("host")
    except ValueError as e:  # a bad CGEN_HOST: one line, not a traceback per test
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config):
    from targets import resolve
    return f"cgen host: {resolve('host').description}"


def pytest_runtest_setup(item):
    from targets import resolve
    from targets.target import cannot_run
    for mark in item.iter_markers("isa"):
        for name in mark.args:
            why = cannot_run(resolve(ISA_TARGETS.get(name, name)))
            if why:
                pytest.skip(f"needs {name}: {why}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that builds code for a named target checks its C on any machine; when it
    then runs that code and this CPU cannot (x86-avx512 on an AVX2-only CPU), the runner
    refuses before anything runs (targets.runner.CannotRunHere) and the rest is skipped,
    naming what the CPU lacks."""
    from targets.runner import CannotRunHere
    try:
        return (yield)
    except CannotRunHere as e:
        pytest.skip(str(e))


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
