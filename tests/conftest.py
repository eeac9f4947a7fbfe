"""Shared test set-up: small thread counts so two xdist workers share 2 cores, deterministic seeds."""

import os

import pytest
import torch

torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
