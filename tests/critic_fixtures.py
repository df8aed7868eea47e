"""The tiny random Cosmos-Reason1 the critic tests use: data_prep/tiny_critic.py (shipped, so
users can try best-of-N offline with it too)."""

from data_prep.tiny_critic import (  # noqa: F401
    CHAT_TEMPLATE,
    SPECIAL,
    make_tiny_reason1,
    tiny_config,
    tiny_tokenizer,
)
