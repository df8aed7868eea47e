"""Test-wide settings."""

from __future__ import annotations

import torch

# Tiny models on a 2-core box: intra-op threading costs more than it saves (a tiny DiT step took
# 0.6 s with 2 threads and 0.03 s with 1 while another process was running).
torch.set_num_threads(1)
