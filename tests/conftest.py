"""What pytest must find here: the fixtures every test folder shares.

The helpers the tests import (the data's place, trained workspaces, the Annif server) are
in the ``support`` package beside this file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Before any test module imports them: the helpers' asserts report their values too.
pytest.register_assert_rewrite("support")


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run a module's torch work on one thread: its tensors are tiny, and on a busy 2-core
    machine torch's thread pool costs many times the work itself."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
