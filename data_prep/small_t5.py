"""A small, randomly initialised T5 encoder with a tokenizer trained on given texts.

Stands in for T5-11B where the real weights cannot be had (tests, the synthetic dataset): same
classes (transformers T5EncoderModel), same d_model 1024 so pickles have the official [n, 1024]
shape, same EOS handling. The tokenizer is a small BPE trained with the `tokenizers` library on the
texts given, with a character alphabet so unseen words still tokenize. Its embeddings mean nothing
linguistically, but different captions give different, fixed vectors, which is all a model needs
to learn caption-dependent motion. Saved with save_pretrained, so T5TextEncoder(<dir>) loads it.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

SPECIAL = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5 (pad 0, eos 1)


def train_tokenizer(texts: list[str], vocab_size: int = 256):
    """A lowercase BPE tokenizer that appends </s> like T5's (a transformers fast tokenizer)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def make_small_t5(
    texts: list[str],
    out_dir: str | Path,
    num_layers: int = 2,
    d_ff: int = 256,
    num_heads: int = 4,
    d_kv: int = 32,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `texts`, build a random T5 encoder (d_model 1024), save both."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = train_tokenizer(texts)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=1024,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    model.save_pretrained(str(out))
    return out
