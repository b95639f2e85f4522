"""Training losses, one family a module, each equal to its sentence-transformers namesake.

- :mod:`~biencoder.losses.ranking`: MultipleNegativesRankingLoss (in-batch negatives) and its cached
  (GradCache) form, for (anchor, positive[, negatives]) pairs;
- :mod:`~biencoder.losses.gist`: GISTEmbedLoss, in-batch negatives masked by a guide model;
- :mod:`~biencoder.losses.distillation`: MSELoss, a teacher's embeddings as targets;
- :mod:`~biencoder.losses.cosent`: CoSENTLoss, pairs with a similarity score.

Each maths is a pure function of embeddings (tested on random tensors and real batches); each
``nn.Module`` embeds a batch's columns with the model and has ``forward_backward``.
"""

from biencoder.losses.common import SIMILARITIES, gather_with_grad, similarity_matrix
from biencoder.losses.cosent import CoSENTLoss, cosent_loss
from biencoder.losses.distillation import MSELoss, mse_distillation_loss
from biencoder.losses.gist import MARGIN_STRATEGIES, GISTEmbedLoss, gist_embed_loss
from biencoder.losses.ranking import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
    multiple_negatives_ranking_loss,
)

__all__ = [
    "MARGIN_STRATEGIES",
    "SIMILARITIES",
    "CachedMultipleNegativesRankingLoss",
    "CoSENTLoss",
    "GISTEmbedLoss",
    "MSELoss",
    "MultipleNegativesRankingLoss",
    "cosent_loss",
    "gather_with_grad",
    "gist_embed_loss",
    "mse_distillation_loss",
    "multiple_negatives_ranking_loss",
    "similarity_matrix",
]
