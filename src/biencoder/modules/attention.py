"""Self-attention for training on CPU: the same maths as SDPA, with attention dropout made cheap.

With attention dropout (BERT's ``attention_probs_dropout_prob`` 0.1, on during training), torch's
``scaled_dot_product_attention`` cannot use its fused CPU kernel and falls back to the math path:
the whole [batch, heads, seq, seq] score tensor (200 MB per layer for 64 x 256 tokens) is written
and read again by each of mask, softmax, dropout and matmul, forward and backward. Measured on a
2-core machine it is nearly half of a training step. Here the same computation runs a few
sequences at a time, so each chunk's scores stay in cache: one layer's forward and backward drops
from 0.87 s to 0.52 s. The dropout masks are drawn on every core (``biencoder.modules.dropout``).

Everything else delegates to Hugging Face's SDPA attention unchanged: inference (no dropout), CUDA
(whose fused kernels do dropout), and dropout 0, so embeddings and the dropout-free optimizer step
stay equal to sentence-transformers'. With dropout the masks are drawn from torch's generator in a
fixed order, so a seeded (or resumed) run repeats itself exactly; they are not the same draws as
SDPA's, as two different correct dropout implementations never are.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from biencoder.modules.dropout import dropout as parallel_dropout

logger = logging.getLogger(__name__)

NAME = "biencoder_chunked_sdpa"
CHUNK_ELEMENTS = 1 << 23  # scores per chunk (32 MB of float32): 10 sequences of 256 tokens x 12 heads


def attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Hugging Face's attention-interface signature; returns ([b, q, heads, d], None) as SDPA does."""
    chunkable = (
        dropout > 0.0
        and query.device.type == "cpu"
        and not getattr(module, "is_causal", False)
        and query.shape[1] == key.shape[1]  # no grouped-query heads
        and kwargs.get("position_bias") is None
    )
    if not chunkable:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return chunked_attention(query, key, value, attention_mask, dropout, scale), None


def chunked_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, dropout: float, scale: float
) -> Tensor:
    """softmax(q k^T * scale + mask) with dropout, times v, a few batch rows at a time.

    query [b, h, q, d], key/value [b, h, k, d]; mask broadcastable to [b, h, q, k], boolean (True:
    attend) or additive. Returns [b, q, h, d], contiguous.
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    bias = _additive(mask, query.dtype) if mask is not None else None
    rows = max(1, CHUNK_ELEMENTS // max(1, heads * q_len * k_len))
    outputs = []
    for start in range(0, batch, rows):
        end = min(batch, start + rows)
        scores = torch.matmul(query[start:end], key[start:end].transpose(-1, -2)) * scale  # [r, h, q, k]
        if bias is not None:
            scores = scores + (bias if bias.shape[0] == 1 else bias[start:end])
        probs = parallel_dropout(scores.softmax(dim=-1), dropout)
        outputs.append(torch.matmul(probs, value[start:end]))  # [r, h, q, d]
    return torch.cat(outputs).transpose(1, 2).contiguous()


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        # the dtype's lowest value, not -inf: a row with nothing to attend to stays finite (as eager BERT)
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(dtype).min
        )
    return mask.to(dtype)


def use_chunked_attention(model: nn.Module) -> bool:
    """Switch a Hugging Face model from SDPA to :func:`attention`; False (unchanged) if it is not on SDPA.

    The choice lives in the loaded model only: it is not written to a saved config.json.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(
        model, "set_attn_implementation"
    ):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)  # type: ignore[operator]
    except (ValueError, NotImplementedError) as exc:  # a model class that refuses custom attention
        logger.debug("chunked attention not used: %s", exc)
        return False
    return True
