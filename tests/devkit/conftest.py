# The sandbox tests use the same sandbox server fixture as the adapter tests.
from tests.platforms.conftest import http, sandbox

__all__ = ["http", "sandbox"]
