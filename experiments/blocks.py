"""Reusable config blocks: experiments compose these and change fields.

Each block returns a fresh node, so experiments can mutate what they get without touching others.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from framework.config import L

CHECKPOINTS = "${oc.env:CHECKPOINTS,checkpoints}"  # where users put downloaded official weights
DATASETS = "${oc.env:DATASETS,datasets}"
# Targets by path: importing the blocks must not import the trainer.
ADAMW = "framework.trainer.optim.adamw"
# model.fps: the training clips' rate after the frame stride, read from the dataset folder when
# the config is resolved (16, upstream's GR1 rate, before the folder exists); config.yaml keeps
# the number, so generation uses the rate the model was trained at.
FPS_FROM_CLIPS = (
    "${clip_fps:${oc.select:data.dataset.dataset_dir,null},"
    "${oc.select:data.dataset.frame_stride,1},16}"
)
LAMBDA_LINEAR = "framework.trainer.optim.LambdaLinear"


def job(project: str = "worldtune", group: str = "debug", name: str | None = None) -> DictConfig:
    """Output folder `${OUTPUT_ROOT:-checkpoints}/<project>/<group>/<name>` (seeds' layout)."""
    return OmegaConf.create(
        dict(
            project=project, group=group, name=name, output_root="${oc.env:OUTPUT_ROOT,checkpoints}"
        )
    )


def optim(lr: float = 2**-14.5, weight_decay: float = 0.1, betas=(0.9, 0.99), eps: float = 1e-8):
    """AdamW; the trainer passes the parameters. Defaults: the Predict2 recipes
    (upstream/cosmos_predict2.md §2.2). `master_weights=true`: bf16 weights, fp32 master copy
    in the optimizer (one GPU or DDP; framework/trainer/master_adamw.py)."""
    return L(ADAMW)(
        lr=lr, weight_decay=weight_decay, betas=list(betas), eps=eps, master_weights=False
    )


def lambda_linear(
    warm_up: int = 1000,
    cycle: int = 100_000,
    f_start: float = 1e-6,
    f_max: float = 0.2,
    f_min: float = 0.1,
) -> DictConfig:
    """Linear warm-up to f_max, then linear to f_min at the cycle's end (upstream/cosmos_predict2.md
    §3.6)."""
    return L(LAMBDA_LINEAR)(
        warm_up_steps=[warm_up],
        cycle_lengths=[cycle],
        f_start=[f_start],
        f_max=[f_max],
        f_min=[f_min],
    )


def train(max_steps: int = 1000, precision: str = "bf16", grad_clip: float = 1.0) -> DictConfig:
    return OmegaConf.create(
        dict(
            max_steps=max_steps,
            grad_accum=1,
            grad_clip=grad_clip,
            precision=precision,
            seed=0,
            deterministic=False,
            ema=dict(enabled=False, rate=0.1),
            max_nonfinite_steps=5,
        )
    )


def parallel(
    strategy: str = "fsdp",
    shard_size: int = 8,
    activation_checkpointing: str = "none",
    compile: bool = False,
    context_parallel: int = 1,
) -> DictConfig:
    """`shard_size` is the FSDP (HSDP) shard group, clamped to the world size; -1 = world.
    `context_parallel`: processes that split one sample's latent frames (docs/training.md),
    clamped to the world size too."""
    return OmegaConf.create(
        dict(
            strategy=strategy,
            shard_size=shard_size,
            activation_checkpointing=activation_checkpointing,
            compile=compile,
            context_parallel=context_parallel,
        )
    )


def checkpoint(
    save_iter: int = 200,
    keep_last: int = 0,
    load_path: str = "",
    format: str = "pt",
    staging_buffers: int = 1,
    writer_threads: int = 2,
) -> DictConfig:
    """`format`: `pt` (every part one full file, written before training goes on: small models)
    or `dcp` (sharded and written in the background, the model file for the last step only:
    the GPU recipes; docs/training.md "Checkpoints"). `staging_buffers`: dcp saves that can be
    in host memory at once, each one save's size pinned: 2 lets a save be copied while the one
    before it is still being written (saves closer together than one write), at the price of
    pinning another file after the first step (docs/performance.md, issue #29).
    `writer_threads`: files each process's dcp save is written as, one thread each (a disk that
    takes parallel streams faster than one, as the lent H100s' did, may write faster with 4)."""
    return OmegaConf.create(
        dict(
            save_iter=save_iter,
            keep_last=keep_last,
            load_path=load_path,
            ignore_keys=[],
            load_ema=False,
            format=format,
            staging_buffers=staging_buffers,
            writer_threads=writer_threads,
        )
    )


def logging(every: int = 10) -> DictConfig:
    """wandb stays off unless `logging.wandb.mode=online|offline`."""
    return OmegaConf.create(
        dict(every=every, wandb=dict(mode="disabled", project="worldtune", entity=None))
    )


def loader(dataset: DictConfig, batch_size: int = 1, num_workers: int = 8) -> DictConfig:
    """The data block: a dataset node plus the DataLoader settings the trainer uses."""
    return OmegaConf.create(
        dict(
            dataset=dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=True,
            persistent_workers=num_workers > 0,
            prefetch_factor=2 if num_workers else None,
            drop_last=True,
        )
    )


def hooks() -> dict:
    """The stock hooks (log, checkpoint, progress); experiments add entries or drop them by name
    (`~hooks.progress`)."""
    from framework.hooks import default_hooks

    return default_hooks()


def eval_set(
    name: str,
    num_items: int = 4,
    seeds=(0,),
    guidance: float = 7.0,
    num_steps: int = 35,
    num_conditional_frames: int = 1,
    metrics=("psnr", "ssim", "latent_l2"),
    dataset_dir: str | None = None,
    item_names=None,
) -> DictConfig:
    """`cfg.eval`: a fixed eval set, the first `num_items` of the dataset's held-out split (or
    the held-out items named in `item_names`, in that order), frozen to a manifest of content hashes
    on first use (framework/evaluation/evalset.py; docs/eval.md). `python -m framework.eval` and
    the eval hook score it."""
    return OmegaConf.create(
        dict(
            name=name,
            num_items=num_items,
            seeds=list(seeds),
            guidance=guidance,
            num_steps=num_steps,
            num_conditional_frames=num_conditional_frames,
            metrics=list(metrics),
            dataset_dir=dataset_dir,
            item_names=list(item_names) if item_names is not None else None,
        )
    )


def base(
    model: DictConfig, data: DictConfig, project: str = "worldtune", group: str = "debug"
) -> DictConfig:
    """A whole experiment tree with the default job blocks around a model and a data block."""
    return OmegaConf.create(
        dict(
            job=job(project, group),
            model=model,
            data=data,
            optim=optim(),
            sched=lambda_linear(),
            train=train(),
            parallel=parallel(),
            checkpoint=checkpoint(),
            logging=logging(),
            hooks=hooks(),
        )
    )


# --- Cosmos-Predict2 Video2World -------------------------------------------------------------

PREDICT2_HUB = "nvidia/Cosmos-Predict2-{size}-Video2World"


def predict2_checkpoint(size: str = "2B", file: str = "model-720p-16fps.pt") -> str:
    """Where `hf download nvidia/Cosmos-Predict2-<size>-Video2World` puts a file."""
    return f"{CHECKPOINTS}/{PREDICT2_HUB.format(size=size)}/{file}"


def predict2_net(size: str = "2B", **overrides) -> DictConfig:
    from framework.models.cosmos2.net import net_config

    return L("framework.models.cosmos2.net.MiniTrainDiT")(**{**net_config(size), **overrides})


def wan_vae(size: str = "2B") -> DictConfig:
    """The Wan2.1 VAE shipped beside each Predict2 checkpoint (upstream/cosmos_predict2.md §5)."""
    return L("framework.models.tokenizers.WanVAETokenizer")(
        path=predict2_checkpoint(size, "tokenizer/tokenizer.pth")
    )


def world_model(
    net: DictConfig,
    tokenizer: DictConfig,
    family: str,
    state_t: int = 24,
    text_encoder: str | DictConfig | None = f"{CHECKPOINTS}/google-t5/t5-11b",
) -> DictConfig:
    """The generic world model around a net, with its family's objective and sampler nodes
    (every default written out, so `model.objective.text_dropout=0` works on the command line).
    The text encoder is a T5 folder or a text-encoder node (framework/models/text), built on
    first use: training on precomputed embeddings never loads it."""
    from framework.models.family import get_family

    fam = get_family(family)
    return L("framework.models.world_model.WorldModel")(
        # The tokenizer first: a missing weights file then fails before the net is allocated.
        tokenizer=tokenizer,
        net=net,
        objective=fam.objective(),
        sampler=fam.sampler(),
        state_t=state_t,
        text_encoder=text_encoder,
        lora=None,
        fps=FPS_FROM_CLIPS,
        max_text_tokens=512,
        empty_prompt="zeros",  # "" -> the no-text zeros; "encode": the encoder's embedding of ""
    )


def predict2_model(net: DictConfig, tokenizer: DictConfig, state_t: int = 24, **kw) -> DictConfig:
    """Predict2 Video2World: rectified flow and the multistep sampler (upstream/cosmos_predict2.md
    §4.1-4.3)."""
    import framework.models.cosmos2  # noqa: F401  (registers the family)

    return world_model(net, tokenizer, "cosmos2", state_t, **kw)


def gr1_dataset(
    root: str = f"{DATASETS}/benchmark_train/gr1",
    num_frames: int = 93,
    video_size=(432, 768),
    frame_stride: int = 1,
    max_text_tokens: int = 512,
    keep_in_memory: bool = False,
    resize_mode: str = "resize",
    text_embeddings: bool = True,
) -> DictConfig:
    """GR1 layout: videos/*.mp4 + metas/*.txt + t5_xxl/*.pickle (data_prep/gr1.py makes it; your
    own clips: docs/data.md), held-out clips in val/. `frame_stride` takes every n-th frame (the
    model's fps becomes the clips' fps / n, read from the videos); `max_text_tokens` caps the
    caption embeddings (512 = T5's, upstream); `keep_in_memory` decodes each video once (small
    sets only); `resize_mode` "resize" (upstream training) or "center_crop". Train from a latent
    cache (python -m data_prep.latent_cache) with `data.dataset.latent_cache_dir=DIR`.
    `text_embeddings=False`: captions only (no t5_xxl/ needed), for a model whose text encoder
    runs online (Predict2.5's Reason1)."""
    return L("framework.data.dataset.VideoDataset")(
        dataset_dir=root,
        num_frames=num_frames,
        video_size=list(video_size),
        frame_stride=frame_stride,
        max_text_tokens=max_text_tokens,
        keep_in_memory=keep_in_memory,
        resize_mode=resize_mode,
        latent_cache_dir=None,
        text_embeddings=text_embeddings,
    )


# --- Cosmos-Predict1 Video2World -------------------------------------------------------------

PREDICT1_HUB = "nvidia/Cosmos-Predict1-{size}-Video2World"
CV8X8X8_DIR = f"{CHECKPOINTS}/nvidia/Cosmos-Tokenize1-CV8x8x8-720p"


def predict1_checkpoint(size: str = "7B", file: str = "model.pt") -> str:
    """Where `hf download nvidia/Cosmos-Predict1-<size>-Video2World` puts a file."""
    return f"{CHECKPOINTS}/{PREDICT1_HUB.format(size=size)}/{file}"


def predict1_net(size: str = "7B", **overrides) -> DictConfig:
    """GeneralDIT at an official size (docs/upstream/cosmos_predict1.md §4.1), with the learnable
    extra position embedding the base checkpoints carry (net.py docstring)."""
    from framework.models.cosmos1.net import net_config

    return L("framework.models.cosmos1.net.GeneralDIT")(**{**net_config(size), **overrides})


def scaled_tokenizer(tokenizer: DictConfig, scale=0.5, shift=0.0) -> DictConfig:
    """A tokenizer whose latents are (z - shift) * scale, per channel or overall: sigma_data = 0.5
    as upstream's Predict1 model sees them (docs/upstream/cosmos_predict1.md §3.2; why here:
    cosmos1/latent_scale.py)."""
    return L("framework.models.cosmos1.latent_scale.ScaledTokenizer")(
        tokenizer=tokenizer, scale=scale, shift=shift
    )


def cv8x8x8(path: str = CV8X8X8_DIR) -> DictConfig:
    """Cosmos-Tokenize1-CV8x8x8-720p (57 frames -> 8 latents), scaled by sigma_data (§3.2, §5)."""
    return L("framework.models.cosmos1.latent_scale.cv8x8x8_tokenizer")(path=path, scale=0.5)


def predict1_model(
    net: DictConfig, tokenizer: DictConfig, state_t: int = 8, sampler: str = "euler", **kw
) -> DictConfig:
    """Predict1 Video2World: EDM with the logvar head and upstream's video conditioning, and the
    official 35-step Euler sampler ("euler") or the training-side RES 2ab sampler ("res",
    docs/upstream/cosmos_predict1.md §3.8). fps 4: what upstream's Bridge dataset reports (§9
    item 5); the dataset's fps wins when a batch carries one."""
    import framework.models.cosmos1  # noqa: F401  (registers the family)

    model = world_model(net, tokenizer, "cosmos1", state_t, **kw)
    if sampler == "res":
        model.sampler = L("framework.diffusion.samplers.MultistepSampler").full()
    elif sampler != "euler":
        raise ValueError(f"unknown Predict1 sampler {sampler!r}; use 'euler' or 'res'.")
    model.fps = 4.0
    return model


def bridge_dataset(
    root: str = f"{DATASETS}/bridge", num_frames: int = 57, video_size=(256, 320)
) -> DictConfig:
    """Bridge layout: annotation/{train,val}/*.json (+ .pickle) and videos/{split}/N/rgb.mp4
    (python -m data_prep.bridge makes it; docs/upstream/cosmos_predict1.md §2)."""
    return L("framework.data.bridge.BridgeDataset")(
        dataset_dir=root, num_frames=num_frames, video_size=list(video_size)
    )


# --- Robot data with actions -----------------------------------------------------------------


def lerobot_dataset(
    root: str = f"{DATASETS}/lerobot",
    camera: str | None = None,
    num_frames: int = 13,
    video_size=(256, 320),
    action_key: str | None = "action",
    state_key: str | None = None,
    action_norm: str = "min_max",
    text: str = "none",
) -> DictConfig:
    """A LeRobot v2.x/v3.0 folder (framework/data/lerobot.py): one camera's clips, the task text
    and `actions` [T-1, D] normalized with meta/stats.json (docs/data.md, "LeRobot")."""
    return L("framework.data.lerobot.LeRobotDataset")(
        dataset_dir=root,
        camera=camera,
        num_frames=num_frames,
        video_size=list(video_size),
        action_key=action_key,
        state_key=state_key,
        action_norm=action_norm,
        text=text,
    )


def bridge_action_dataset(
    root: str = f"{DATASETS}/bridge", num_frames: int = 13, video_size=(256, 320)
) -> DictConfig:
    """Bridge for the action-conditioned recipes: the IRASim archive (python -m data_prep.bridge
    --archive ... --skip_t5), 13 frames and their 12 upstream actions x20, no instruction
    (framework/data/bridge_actions.py)."""
    return L("framework.data.bridge_actions.BridgeActionDataset")(
        dataset_dir=root, num_frames=num_frames, video_size=list(video_size)
    )
