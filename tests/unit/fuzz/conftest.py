"""The fuzz tests run ``nuro-ml`` with the same private home as the command-line tests."""

from tests.unit.cli.conftest import cli_home  # noqa: F401
