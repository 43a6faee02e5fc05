"""What the tests share: the real data's place, trained workspaces, fixtures' helpers.

``tests/`` is on ``sys.path`` while pytest runs (``pythonpath`` in pyproject.toml), so a test
module imports these as ``from support.data import SHARED_DATA``. The modules here are not
tests; pytest rewrites their asserts (tests/conftest.py registers the package).
"""
