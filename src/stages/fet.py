"""Stage 3, fine-grained entity typing (FET): the NEE tagger plus a cluster head on pseudo-labels.

The encoder starts from the NEE export (and the typed head from the NEE head, when the export has
one). Each training step computes

    loss = typed partial-label loss (stage 2's, on the last layer)
           + lambda_cluster * class-weighted cross-entropy of the cluster head against the spans'
             current pseudo-labels (spans without one are ignored)

With `cluster_loss="prototype"` the cluster head is a `PrototypeHead`: no trained weights, the
logits are the cosines of each span vector (taken into the last clustering's PCA space) to that
clustering's centroids over a temperature, so the whole cluster loss reaches the encoder.

The cluster head is a linear layer over pooled span vectors (`cofee.models.span_pooling`, `pooling`) taken
from `feature_layer`, the same layer whose pooled vectors are clustered: the head learns to predict
the clusters of the very representation it reads (DeepCluster). The default, -2 (the layer below the
last), is the CoFEE code's choice (layer 11 of 12): the last layer is the typed head's and is pulled
towards the coarse types.

While it trains, the module writes each span's pooled vector (detached, float32, CPU) into a
`SpanFeatureStore` (`cofee.clustering.features`) by global span id, so `callbacks/cluster_refresh.py` can re-cluster what the epoch
already computed instead of running a second pass over the corpus. Those vectors come from a model
in training mode (dropout on) that moves during the epoch: the price of a refresh that costs a few
per cent of an epoch rather than a third. `FETStageConfig.refresh_features: extract` runs the exact
(eval-mode, end-of-epoch) pass instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from cofee.clustering.distributed import PseudoLabels
from cofee.clustering.features import SpanFeatureStore
from cofee.clustering.kmeans import ClusterModel
from cofee.config import ClusterLoss, NoiseConfig, OptimConfig
from cofee.data.alignment import IGNORE_INDEX
from cofee.models.span_pooling import check_pooling, pool_batch_spans, pooled_dim
from cofee.stages.nee import NEEModule
from cofee.utils.errors import ConfigError


class PrototypeHead(nn.Module):
    """Cluster logits as cosines to the k-means centroids: a span vector goes through the clustering's
    own PCA (x A^T + b, whitening included), is L2-normalised as k-means saw it, and each logit is its
    cosine to a centroid over `temperature`. The PCA and centroids are buffers that `install` replaces
    at every clustering (the same on every rank: they come from the broadcast `ClusterModel`) and that
    a checkpoint keeps; nothing here is trained, so gradients go to the span vectors alone."""

    def __init__(self, in_features: int, out_features: int, space: int, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.in_features, self.out_features, self.temperature = in_features, out_features, temperature
        self.register_buffer("projection", torch.zeros(space, in_features))
        self.register_buffer("shift", torch.zeros(space))
        self.register_buffer("prototypes", torch.zeros(out_features, space))

    def install(self, model: ClusterModel) -> None:
        """The PCA (or none: the identity) and the centroids of a clustering, as the prototypes."""
        centroids = torch.as_tensor(np.asarray(model.centroids), dtype=torch.float32)
        if model.pca is None:
            matrix, bias = torch.eye(self.in_features), torch.zeros(self.in_features)
        else:
            matrix, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in model.pca)
        if matrix.shape != self.projection.shape or centroids.shape != self.prototypes.shape:
            raise ValueError(
                f"a clustering of {tuple(centroids.shape)} centroids through a {tuple(matrix.shape)} PCA "
                f"for prototypes {tuple(self.prototypes.shape)} over {self.in_features} dims"
            )
        with torch.no_grad():
            self.projection.copy_(matrix)
            self.shift.copy_(bias)
            self.prototypes.copy_(nn.functional.normalize(centroids, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(x.float() @ self.projection.T + self.shift, dim=-1)
        return z @ self.prototypes.T / self.temperature


class FETModule(NEEModule):
    stage_name = "fet"

    def __init__(
        self,
        encoder: PreTrainedModel,
        optim: OptimConfig,
        types: list[str],
        k: int,
        scheme: str = "BIO",
        dropout: float = 0.1,
        noise: NoiseConfig | None = None,
        pooling: str = "sum",
        feature_layer: int = -2,
        lambda_cluster: float = 0.001,
        suffix_len: int = 1,
        type_balance: float = 0.0,
        cluster_loss: str = "cross_entropy",
        prototype_temperature: float = 0.1,
        pca_dim: int | None = None,
    ):
        super().__init__(encoder, optim, types, scheme, dropout, noise, type_balance)
        check_pooling(pooling, "stages.fet.pooling")
        layers = encoder.config.num_hidden_layers + 1  # hidden_states: the embeddings, then each layer
        if not -layers <= feature_layer < layers:
            raise ConfigError(
                "stages.fet.feature_layer",
                f"layer {feature_layer} does not exist: the encoder has {layers} states",
            )
        self.pooling = pooling
        self.feature_layer = feature_layer
        self.lambda_cluster = lambda_cluster
        self.suffix_len = suffix_len
        if cluster_loss not in tuple(ClusterLoss):
            raise ConfigError(
                "stages.fet.cluster_loss", f"must be one of {', '.join(ClusterLoss)}, got {cluster_loss!r}"
            )
        dim = pooled_dim(pooling, encoder.config.hidden_size)
        self.cluster_loss_kind = str(cluster_loss)
        if self.cluster_loss_kind == ClusterLoss.prototype:
            # the clustered space: the PCA's (`cluster.pca_dim`, at most the vector's width) or the vectors'
            space = min(pca_dim, dim) if pca_dim else dim
            self.cluster_head = PrototypeHead(dim, k, space, prototype_temperature)
        else:
            self.cluster_head = nn.Linear(dim, k)
        self.save_hyperparameters(
            {"k": k, "pooling": pooling, "feature_layer": feature_layer, "lambda_cluster": lambda_cluster}
        )
        # set by ClusterRefreshCallback (not module state: their size depends on the data)
        self.pseudo_labels: PseudoLabels | None = None
        self.class_weights: torch.Tensor | None = None
        self.features: SpanFeatureStore | None = None

    def head_modules(self) -> list[nn.Module]:
        return [self.head, self.cluster_head]

    def fresh_rates(self) -> list[tuple[nn.Module, float]]:
        """The base rates, with the cluster head at `optim.cluster_head_lr` when it is set."""
        head_lr = self.optim.head_lr or self.optim.lr
        cluster_lr = getattr(self.optim, "cluster_head_lr", None) or head_lr
        return [(m, cluster_lr if m is self.cluster_head else head_lr) for m in self.fresh_modules()]

    # -- pseudo-labels ----------------------------------------------------------------------------
    def set_pseudo_labels(self, labels: PseudoLabels) -> None:
        if len(labels.class_weights) != self.cluster_head.out_features:
            raise ValueError(
                f"{len(labels.class_weights)} clusters for a cluster head of {self.cluster_head.out_features}"
            )
        self.pseudo_labels = labels
        self.class_weights = torch.as_tensor(np.asarray(labels.class_weights), dtype=torch.float32)
        # new clusters, new prototypes; restored labels carry no model: the checkpoint has the buffers
        if isinstance(self.cluster_head, PrototypeHead) and labels.model is not None:
            self.cluster_head.install(labels.model)

    def reset_cluster_head(self, seed: int, optimizers=()) -> None:
        """Re-initialise the cluster head from `seed` (the same weights on every device and rank) and
        drop its optimiser state, so Adam moments of the old clusters do not steer the new ones. A
        `PrototypeHead` has nothing to re-initialise: its new prototypes came with the labels."""
        if isinstance(self.cluster_head, PrototypeHead):
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = nn.Linear(self.cluster_head.in_features, self.cluster_head.out_features)
        with torch.no_grad():
            self.cluster_head.weight.copy_(fresh.weight)
            self.cluster_head.bias.copy_(fresh.bias)
        for optimizer in optimizers:
            for param in self.cluster_head.parameters():
                optimizer.state.pop(param, None)

    def cluster_targets(self, span_ids: torch.Tensor) -> torch.Tensor:
        if self.pseudo_labels is None:
            return torch.full_like(span_ids, IGNORE_INDEX)
        found = self.pseudo_labels.lookup(span_ids.cpu().numpy(), missing=IGNORE_INDEX)
        return torch.from_numpy(found).to(span_ids.device)

    def cluster_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Class-weighted cross-entropy; 0 (still connected to the head, for DDP) without targets."""
        if not bool((targets != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return nn.functional.cross_entropy(logits.float(), targets, weight=weight, ignore_index=IGNORE_INDEX)

    # -- steps ------------------------------------------------------------------------------------
    def hidden_states(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(last layer, `feature_layer`) of one forward pass."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.feature_layer == -1:
            last = self.encoder(**inputs).last_hidden_state
            return last, last
        out = self.encoder(**inputs, output_hidden_states=True)
        return out.last_hidden_state, out.hidden_states[self.feature_layer]

    def step_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        last, layer = self.hidden_states(batch)
        typed = self.head.loss(self.head(last), batch)
        pooled = pool_batch_spans(layer, batch, self.pooling, self.suffix_len)
        ids = torch.tensor([i for window in batch["span_ids"] for i in window], dtype=torch.long)
        if self.features is not None and len(ids):
            self.features.record(ids, pooled, self.current_epoch)
        cluster = self.cluster_loss(self.cluster_head(pooled), self.cluster_targets(ids).to(pooled.device))
        return {"typed": typed, "cluster": cluster, "hidden": last}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.step_losses(batch)
        loss = parts["typed"] + self.lambda_cluster * parts["cluster"]
        self.log(f"{self.stage_name}/train/typed_loss", parts["typed"])
        self.log(f"{self.stage_name}/train/cluster_loss", parts["cluster"])
        loss = self.with_forgetting_controls(loss, parts["hidden"], batch, batch_idx)
        self.log(f"{self.stage_name}/train/loss", loss, prog_bar=True)
        self.log(f"{self.stage_name}/train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss
