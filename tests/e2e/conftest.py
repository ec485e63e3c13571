"""Fixtures: one shared site for the scenarios that leave it as they found it, and fresh
sites for the ones that break a machine. Every process is stopped in the finalizer."""

import pytest

from harness import Site


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("site"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh_site(tmp_path):
    s = Site(tmp_path / "site")
    try:
        yield s
    finally:
        s.close()
