"""Test set-up: an offline Hugging Face Hub cache in a temp dir, and small helpers shared by the tests.

``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` are set before anything imports huggingface_hub, so every test that loads
weights goes through the real huggingface_hub/timm loading code against files the tests wrote themselves.
"""
import os
import shutil
import tempfile
from pathlib import Path

_HUB_CACHE = Path(tempfile.mkdtemp(prefix='gmamba_zoo_hub_'))
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_HUB_CACHE'] = str(_HUB_CACHE)
os.environ.pop('HF_HOME', None)

import pytest  # noqa: E402
import torch  # noqa: E402

from hub_cache import put_in_hub_cache  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture(scope='session')
def hub_cache() -> Path:
    """The offline Hub cache directory (``HF_HUB_CACHE``) for this test session."""
    return _HUB_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HUB_CACHE, ignore_errors=True)


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module of small-tensor tests: on a shared 2-core machine two OpenMP threads contend
    and run such tests many times slower. Use with ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
