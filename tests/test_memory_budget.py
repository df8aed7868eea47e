"""bench.bench_memory_budget: FSDP2 shards on the meta device over a fake process group."""

from __future__ import annotations

from bench.bench_memory_budget import budget

SMALL = dict(
    model_channels=64,
    num_blocks=3,
    num_heads=2,
    in_channels=4,
    out_channels=4,
    crossattn_emb_channels=32,
    adaln_lora_dim=16,
)


def test_budget_counts_fsdp_shards_on_meta():
    one = budget("2B", 1, net_kwargs=SMALL)
    four = budget("2B", 4, net_kwargs=SMALL, ema=True)
    assert one["parameters"] == four["parameters"] == one["parameters_per_rank"]
    # Every tensor is split in 4 along dim 0 (rounded up): a quarter, and never less.
    assert four["parameters"] / 4 <= four["parameters_per_rank"] < four["parameters"] / 3
    per_rank = four["parameters_per_rank"]
    b = four["bytes"]
    assert b["fp32 weights (shard)"] == 4 * per_rank
    assert b["AdamW exp_avg + exp_avg_sq (shard)"] == 8 * per_rank
    assert b["fp32 EMA (shard)"] == 4 * per_rank
    assert "fp32 EMA (shard)" not in one["bytes"]
    assert four["total_bytes"] == sum(b.values())
