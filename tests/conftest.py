"""Shared test set-up: small thread counts so two xdist workers share 2 cores, deterministic seeds.

The thread count goes into OMP_NUM_THREADS too, so that `compt.threads` (which `train_run` consults) and
subprocesses pick the same count; idle OpenMP threads sleep instead of spinning (see `compt.threads`).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
