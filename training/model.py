"""The two towers. Inputs are exactly the arrays rtrec.domain.encoder produces (0 = unknown/padding),
so the ONNX graphs take what serving encodes. The loss lives in training/train.py, outside the towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtrec.domain.encoder import FeatureEncoder


class UserTower(nn.Module):
    """Hashed user id + demographics + the mean of the user's recent items -> MLP -> unit vector.

    The history pooling reads the item table of this tower: new clicks change the embedding at
    request time without retraining.
    """

    def __init__(
        self, cardinalities: dict[str, int], dim: int = 64, hidden: int = 256, id_dim: int = 64, side_dim: int = 8
    ) -> None:
        super().__init__()
        self.history_items = nn.Embedding(cardinalities["item"], id_dim, padding_idx=0)
        self.user_hash = nn.Embedding(cardinalities["user_hash"], id_dim, padding_idx=0)
        self.age = nn.Embedding(cardinalities["age"], side_dim)
        self.gender = nn.Embedding(cardinalities["gender"], side_dim)
        self.occupation = nn.Embedding(cardinalities["occupation"], side_dim)
        self.zip = nn.Embedding(cardinalities["zip"], side_dim)
        self.mlp = nn.Sequential(nn.Linear(2 * id_dim + 4 * side_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.normal_(self.history_items.weight, std=0.05)
        nn.init.normal_(self.user_hash.weight, std=0.01)
        with torch.no_grad():
            self.history_items.weight[0].zero_()
            self.user_hash.weight[0].zero_()

    def pooled_history(self, history: torch.Tensor) -> torch.Tensor:
        weights = (history > 0).to(self.history_items.weight.dtype)
        if self.training:
            # The same masked mean as below, as a dense [B, n_items] @ table product: on CPU its
            # backward is a matmul instead of a slow index_add, about 4x faster per epoch.
            dense = torch.zeros(history.shape[0], self.history_items.num_embeddings, dtype=weights.dtype)
            summed = dense.scatter_add_(1, history, weights) @ self.history_items.weight
        else:
            summed = (self.history_items(history) * weights.unsqueeze(-1)).sum(1)
        return summed / weights.sum(1, keepdim=True).clamp(min=1.0)

    def forward(
        self,
        user_hash: torch.Tensor,
        age: torch.Tensor,
        gender: torch.Tensor,
        occupation: torch.Tensor,
        zip: torch.Tensor,
        history: torch.Tensor,
    ) -> torch.Tensor:  # named as the ONNX input it feeds
        features = torch.cat(
            [
                self.pooled_history(history),
                self.user_hash(user_hash),
                self.age(age),
                self.gender(gender),
                self.occupation(occupation),
                self.zip(zip),
            ],
            dim=-1,
        )
        return F.normalize(self.mlp(features), dim=-1)


class ItemTower(nn.Module):
    """Item id + genres + year + popularity bucket -> MLP -> unit vector; id 0 embeds from features alone."""

    def __init__(
        self,
        cardinalities: dict[str, int],
        dim: int = 64,
        hidden: int = 256,
        id_dim: int = 64,
        genre_dim: int = 16,
        side_dim: int = 8,
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(cardinalities["item"], id_dim, padding_idx=0)
        self.genre = nn.Embedding(cardinalities["genre"], genre_dim, padding_idx=0)
        self.year = nn.Embedding(cardinalities["year"], side_dim)
        self.popularity = nn.Embedding(cardinalities["popularity"], side_dim)
        self.mlp = nn.Sequential(nn.Linear(id_dim + genre_dim + 2 * side_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, item: torch.Tensor, genres: torch.Tensor, year: torch.Tensor, popularity: torch.Tensor) -> torch.Tensor:
        genre_weights = (genres > 0).to(self.genre.weight.dtype).unsqueeze(-1)
        genre_mean = (self.genre(genres) * genre_weights).sum(1) / genre_weights.sum(1).clamp(min=1.0)
        features = torch.cat([self.item(item), genre_mean, self.year(year), self.popularity(popularity)], dim=-1)
        return F.normalize(self.mlp(features), dim=-1)


def build_towers(encoder: FeatureEncoder, dim: int = 64, hidden: int = 256) -> tuple[UserTower, ItemTower]:
    cards = encoder.cardinalities
    return UserTower(cards, dim=dim, hidden=hidden), ItemTower(cards, dim=dim, hidden=hidden)


def sampled_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    item_log_q: torch.Tensor,
    temperature: float,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch sampled softmax with logQ correction (Yi et al., RecSys 2019).

    Row i's positive is column i; the other items of the batch are its negatives. Subtracting
    log Q(item), the item's sampling probability in the training stream, removes the bias
    against popular items that in-batch negatives bring. `false_negatives[i, j]` masks column j
    out of row i (the same item twice in a batch, or another known positive of the user).
    """
    logits = user_vectors @ item_vectors.T / temperature - item_log_q.unsqueeze(0)
    if false_negatives is not None:
        logits = logits.masked_fill(false_negatives, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(user_vectors)))
