"""Cosmos-Predict2 Video2World post-training on GR1 humanoid clips (DreamGen benchmark).

Data: `python -m data_prep.gr1 --dataset_path datasets/benchmark_train/gr1` (downloads
nvidia/GR1-100 and writes T5-11B embeddings). Weights: `hf download
nvidia/Cosmos-Predict2-2B-Video2World \
--local-dir checkpoints/nvidia/Cosmos-Predict2-2B-Video2World`
(the same for 14B).
Values are the upstream recipe's (upstream/cosmos_predict2.md §2.2).
"""

from __future__ import annotations

from experiments import blocks
from framework.config import Alias, experiment

# Upstream gives its Predict2.5 GR00T recipe this same name (docs/upstream/cosmos_predict2_5.md §5);
# here it keeps meaning Predict2's, and says so whenever it is used.
BARE_UPSTREAM_NOTE = (
    "that upstream name is Predict2's 2B GR00T recipe here; upstream's Predict2.5 recipe of the "
    "same name is predict2_5_groot_gr1_480 (or predict2p5_video2world_training_2b_groot_gr1_480)."
)


@experiment(
    aliases=[Alias("predict2_video2world_training_2b_groot_gr1_480", BARE_UPSTREAM_NOTE)],
    job_name="2b_groot_gr1_480",
)
def groot_gr1_480():
    """Predict2 2B full fine-tune on GR1, 93 frames at 432x768; 1 node x 8 GPUs, FSDP 8."""
    model = blocks.predict2_model(blocks.predict2_net("2B"), blocks.wan_vae("2B"))
    cfg = blocks.base(model, blocks.loader(blocks.gr1_dataset()), "posttraining", "video2world")
    cfg.train.max_steps = 100_000  # the schedule's one cycle (upstream runs 400k and crashes)
    cfg.parallel.shard_size = 8
    # Attention is over half the step (31,104 tokens); selective keeps it from being recomputed.
    cfg.parallel.activation_checkpointing = "selective"
    cfg.parallel.compile = True  # per block: 2.73 -> 2.19 s per step on an H200 (performance.md)
    cfg.checkpoint.save_iter = 200
    # Sharded and in the background: a save of the 2B job stalled training 41 s as whole files
    # (docs/performance.md); a 14B run never gathers its optimizer on one rank.
    cfg.checkpoint.format = "dcp"
    # The 480p recipe starts from the 720p/16fps base checkpoint (upstream/cosmos_predict2.md §10).
    cfg.checkpoint.load_path = blocks.predict2_checkpoint("2B")
    return cfg


@experiment(
    aliases=["predict2_video2world_training_14b_groot_gr1_480"], job_name="14b_groot_gr1_480"
)
def groot_gr1_480_14b():
    """Predict2 14B full fine-tune on GR1; FSDP 32 and context parallel 4 (4 nodes x 8 GPUs)."""
    cfg = groot_gr1_480()
    cfg.model.net = blocks.predict2_net("14B")
    cfg.model.tokenizer = blocks.wan_vae("14B")
    cfg.parallel.shard_size = 32
    # As upstream (upstream/cosmos_predict2.md §2.2): 4 ranks share one clip's 24 latent frames
    # (6 each; the 40 heads split 10 per rank), so the global batch is GPUs / 4.
    cfg.parallel.context_parallel = 4
    cfg.checkpoint.load_path = blocks.predict2_checkpoint("14B")
    return cfg


@experiment(job_name="2b_groot_gr1_480_lora")
def groot_gr1_480_lora():
    """Predict2 2B LoRA (rank 16, alpha 16) on GR1; fits far fewer GPUs than full fine-tuning."""
    cfg = groot_gr1_480()
    cfg.model.lora = {"rank": 16, "alpha": 16, "targets": None}  # the family's lora_targets
    cfg.optim.lr = 2**-10  # upstream LoRA guideline for 2B at rank 16
    return cfg


@experiment(job_name="14b_groot_gr1_480_lora")
def groot_gr1_480_14b_lora():
    """Predict2 14B LoRA (rank 32, alpha 32) on GR1."""
    cfg = groot_gr1_480_14b()
    cfg.model.lora = {"rank": 32, "alpha": 32, "targets": None}  # the family's lora_targets
    cfg.optim.lr = 2**-11  # upstream LoRA guideline for 14B at rank 32
    return cfg
