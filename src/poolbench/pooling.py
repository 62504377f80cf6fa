"""Pooling strategies: how to summarise a transformer's hidden states into one vector per example.

Every strategy is a small :class:`Pooling` module registered under a name in :data:`POOLINGS`.
It receives the last ``ctx.num_layers`` hidden-state layers (each ``(B, T, H)``, the final layer
last), the attention mask ``(B, T)`` (1 for real tokens, special tokens included; 0 for pads,
padding on either side) and, for ``hierarchical`` only, per-token sentence ids. It returns a
``(B, output_dim)`` float32 tensor that a shared :class:`ClassifierHead` turns into logits.

Conventions shared by all poolings (tested in ``tests/test_pooling.py``):

* Inputs are cast to float32, and hidden states at pad positions are zeroed before anything
  else, so pad values (even huge or NaN ones) can never leak into the output.
* Results depend only on the real tokens: padding side and amount do not matter.
* Outputs are finite (no NaN) for any mask, even a row without a single real token.

Adding a strategy is one decorated class::

    @register("min")
    class MinPooling(Pooling):
        \"\"\"Masked element-wise minimum over real tokens.\"\"\"

        def forward(self, hidden_states, attention_mask, sentence_ids=None):
            h, mask = prepare(hidden_states[-1], attention_mask)
            return -masked_max(-h, mask)
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

FAMILIES = ("encoder", "decoder")


@dataclass
class PoolingContext:
    """What a pooling may know about the backbone when it is built."""

    hidden_size: int
    num_layers: int  # layers present in hidden_states: the last k of the backbone, k >= 1
    family: str  # "encoder" (BERT-like, [CLS] first) or "decoder" (GPT/Llama-like)
    pooler: nn.Module | None = None  # the backbone's pretrained pooler (e.g. BertPooler), if any
    freeze_pretrained: bool = False  # pretrained parts copied from the backbone get requires_grad=False
    options: dict = field(default_factory=dict)  # per-pooling options from the config

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(
                f"hidden_size and num_layers must be >= 1, got {self.hidden_size} and {self.num_layers}"
            )


# --------------------------------------------------------------------------------------------
# Masked tensor helpers, the building blocks of every pooling.
# `h` is (B, T, H) float32 with pads zeroed (see `prepare`), `mask` is (B, T) bool.
# --------------------------------------------------------------------------------------------


def prepare(hidden: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cast one layer to float32 and zero its pad positions; return it with a bool mask."""
    mask = attention_mask.bool()
    h = hidden.float().masked_fill(~mask.unsqueeze(-1), 0.0)
    return h, mask


def first_index(mask: Tensor) -> Tensor:
    """Position of the first real token of each row (0 for a row without real tokens)."""
    return mask.int().argmax(dim=1)  # argmax returns the first maximal index


def last_index(mask: Tensor) -> Tensor:
    """Position of the last real token of each row, for left or right padding alike."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (positions * mask).argmax(dim=1)


def gather_tokens(h: Tensor, index: Tensor) -> Tensor:
    """Rows ``h[b, index[b]]``: (B, T, H) and (B,) -> (B, H)."""
    return h[torch.arange(h.shape[0], device=h.device), index]


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens; pads must already be zero in ``h``."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(h.dtype)
    return h.sum(dim=1) / count


def masked_max(h: Tensor, mask: Tensor) -> Tensor:
    """Element-wise max over real tokens; 0 for a row without real tokens."""
    lowest = torch.finfo(h.dtype).min
    out = h.masked_fill(~mask.unsqueeze(-1), lowest).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), out, torch.zeros_like(out))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over positions where ``mask`` is True; weights are exactly 0 elsewhere.

    A slice with no True position gets all-zero weights (not NaN), so its weighted sum is 0.
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask.to(scores.dtype)


def attention_scorer(hidden_size: int) -> nn.Sequential:
    """Token scorer Linear(H, H/2) -> tanh -> Linear(H/2, 1).

    The last layer has no bias: softmax ignores a constant shift, so a bias would never learn.
    """
    inner = max(1, hidden_size // 2)
    return nn.Sequential(nn.Linear(hidden_size, inner), nn.Tanh(), nn.Linear(inner, 1, bias=False))


# --------------------------------------------------------------------------------------------
# Base class, registry, head
# --------------------------------------------------------------------------------------------


class Pooling(nn.Module):
    """Base class: maps hidden states (the last ``ctx.num_layers`` layers) to ``(B, output_dim)``."""

    name: str = "<unregistered>"  # set by @register
    families: tuple[str, ...] = FAMILIES  # backbone families the strategy applies to
    needs_pooler: bool = False  # True if it reuses the backbone's pretrained pooler (ctx.pooler)
    accepted_options: tuple[str, ...] = ()  # keys of ctx.options the strategy understands
    # Bump when a change to the code changes what the pooling computes: every run that uses it is
    # then rerun, and no other (the run spec carries it; lm-evaluation-harness's task versions).
    version: int = 1

    def __init__(self, ctx: PoolingContext):
        super().__init__()
        if ctx.family not in self.families:
            raise ValueError(
                f"pooling {self.name!r} applies to {' and '.join(self.families)} backbones only, "
                f"not to a {ctx.family!r} backbone"
            )
        unknown = sorted(set(ctx.options) - set(self.accepted_options))
        if unknown:
            raise ValueError(
                f"pooling {self.name!r} got unknown option(s) {unknown}; "
                f"it accepts {list(self.accepted_options) or 'none'}"
            )
        self.hidden_size = ctx.hidden_size
        self.family = ctx.family
        self.output_dim = ctx.hidden_size

    def forward(
        self,
        hidden_states: Sequence[Tensor],
        attention_mask: Tensor,
        sentence_ids: Tensor | None = None,
    ) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, output_dim={self.output_dim}"


POOLINGS: dict[str, type[Pooling]] = {}


def register(name: str):
    """Class decorator: add a :class:`Pooling` subclass to :data:`POOLINGS` under ``name``."""

    def decorator(cls: type[Pooling]) -> type[Pooling]:
        if not (isinstance(cls, type) and issubclass(cls, Pooling)):
            raise TypeError(f"@register({name!r}) expects a Pooling subclass, got {cls!r}")
        if name in POOLINGS:
            raise ValueError(f"pooling {name!r} is already registered (by {POOLINGS[name].__qualname__})")
        cls.name = name
        POOLINGS[name] = cls
        return cls

    return decorator


def _lookup(name: str) -> type[Pooling]:
    try:
        return POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; known poolings: {', '.join(sorted(POOLINGS))}") from None


def applicable(name: str, family: str) -> bool:
    """Whether pooling ``name`` applies to backbones of ``family`` ("encoder" or "decoder")."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return family in _lookup(name).families


def build_pooling(name: str, ctx: PoolingContext) -> Pooling:
    """Instantiate the registered pooling ``name``; ValueError if unknown or not applicable to ``ctx``."""
    return _lookup(name)(ctx)


@functools.cache
def _learned(name: str, family: str, num_layers: int, options: str) -> bool:
    ctx = PoolingContext(hidden_size=8, num_layers=num_layers, family=family, freeze_pretrained=True,
                         options=json.loads(options))
    return any(p.requires_grad for p in build_pooling(name, ctx).parameters())


def learned(name: str, family: str, num_layers: int = 4, options: dict | None = None) -> bool:
    """Whether pooling ``name`` has parameters of its own that train when only the pooling and the head
    train (the frozen regime): attention and hierarchical do; cls, mean, ... and BERT's frozen pooler
    do not. Decided by building it once on a tiny context, so a new pooling needs no flag."""
    if _lookup(name).needs_pooler:  # a pretrained pooler, frozen when the backbone is
        return False
    return _learned(name, family, num_layers, json.dumps(options or {}, sort_keys=True))


class ClassifierHead(nn.Module):
    """Shared classifier on top of every pooling: dropout then a linear layer."""

    def __init__(self, in_dim: int, num_labels: int = 2, dropout: float = 0.1, bias: bool = True):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, num_labels, bias=bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(self.dropout(pooled))


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


@register("cls")
class ClsPooling(Pooling):
    """First real token of the final layer: [CLS] for encoders, a null baseline for decoders."""

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        return gather_tokens(h, first_index(mask))


@register("pooler")
class PretrainedPooler(Pooling):
    """The backbone's pretrained pooler (BERT: dense + tanh) applied to [CLS]."""

    families = ("encoder",)
    needs_pooler = True

    def __init__(self, ctx: PoolingContext):
        super().__init__(ctx)
        if ctx.pooler is None:
            raise ValueError("pooling 'pooler' needs ctx.pooler, but the backbone has no pretrained pooler")
        self.pooler = copy.deepcopy(ctx.pooler).float()
        # Explicit either way: the backbone's own pooler may have been frozen with the backbone.
        self.pooler.requires_grad_(not ctx.freeze_pretrained)

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        first = gather_tokens(h, first_index(mask))
        # HF poolers read position 0 of a (B, T, H) tensor; hand them the first real token there.
        return self.pooler(first.unsqueeze(1))


@register("mean")
class MeanPooling(Pooling):
    """Mean of the final layer over real tokens."""

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        return masked_mean(h, mask)


@register("max")
class MaxPooling(Pooling):
    """Element-wise max of the final layer over real tokens."""

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        return masked_max(h, mask)


@register("weighted_mean")
class WeightedMeanPooling(Pooling):
    """Position-weighted mean (SGPT): the i-th real token gets weight i, for i = 1..L."""

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        weights = (mask.cumsum(dim=1) * mask).to(h.dtype)  # counts real tokens only: padding-side invariant
        total = weights.sum(dim=1, keepdim=True).clamp(min=1)
        return (h * weights.unsqueeze(-1)).sum(dim=1) / total


@register("last")
class LastTokenPooling(Pooling):
    """Last real token of the final layer (what *ForSequenceClassification decoders use)."""

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        return gather_tokens(h, last_index(mask))


@register("attention")
class AttentionPooling(Pooling):
    """Learned attention: an MLP scores each token, softmax over real tokens, weighted sum."""

    def __init__(self, ctx: PoolingContext):
        super().__init__(ctx)
        self.scorer = attention_scorer(ctx.hidden_size)

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        h, mask = prepare(hidden_states[-1], attention_mask)
        weights = masked_softmax(self.scorer(h).squeeze(-1), mask)  # (B, T)
        return torch.einsum("bt,bth->bh", weights, h)


@register("layers_concat")
class LayersConcatPooling(Pooling):
    """Concatenation of one token's state in each of the last k layers (oldest first).

    Options: ``layers`` (k, default 4) and ``token``: "auto" ([CLS]/first real token for encoders,
    last real token for decoders), "first", "last" or "mean" (masked mean per layer).
    """

    accepted_options = ("layers", "token")
    tokens = ("auto", "first", "last", "mean")

    def __init__(self, ctx: PoolingContext):
        super().__init__(ctx)
        self.layers = int(ctx.options.get("layers", 4))
        if not 1 <= self.layers <= ctx.num_layers:
            raise ValueError(
                f"pooling 'layers_concat' wants layers={self.layers}, but only {ctx.num_layers} "
                f"layer(s) are available (ctx.num_layers)"
            )
        token = ctx.options.get("token", "auto")
        if token not in self.tokens:
            raise ValueError(f"pooling 'layers_concat': token must be one of {self.tokens}, got {token!r}")
        if token == "auto":
            token = "first" if ctx.family == "encoder" else "last"
        self.token = token
        self.output_dim = self.layers * ctx.hidden_size

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        if len(hidden_states) < self.layers:
            raise ValueError(f"layers_concat needs {self.layers} layers, got {len(hidden_states)}")
        mask = attention_mask.bool()
        index = first_index(mask) if self.token == "first" else last_index(mask)
        parts = []
        for layer in hidden_states[-self.layers :]:
            h, _ = prepare(layer, mask)
            parts.append(masked_mean(h, mask) if self.token == "mean" else gather_tokens(h, index))
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layers={self.layers}, token={self.token!r}"


@register("hierarchical")
class HierarchicalPooling(Pooling):
    """Attention over tokens within each sentence, then attention over the sentence vectors.

    Tokens with sentence id -1 (special tokens, pads) belong to no sentence. An example with no
    sentence at all (every id -1) falls back to the masked mean of all its real tokens.
    """

    def __init__(self, ctx: PoolingContext):
        super().__init__(ctx)
        self.token_scorer = attention_scorer(ctx.hidden_size)
        self.sentence_scorer = attention_scorer(ctx.hidden_size)

    def forward(self, hidden_states, attention_mask, sentence_ids=None):
        if sentence_ids is None:
            raise ValueError(
                "pooling 'hierarchical' needs sentence_ids (B, T): the sentence index of each token, -1 for none"
            )
        h, mask = prepare(hidden_states[-1], attention_mask)
        num_sentences = max(int(sentence_ids.max()) + 1, 1)
        sentences = torch.arange(num_sentences, device=sentence_ids.device)
        # in_sentence[b, s, t]: token t of example b is a real token of sentence s.
        in_sentence = (sentence_ids.unsqueeze(1) == sentences.view(1, -1, 1)) & mask.unsqueeze(1)

        token_scores = self.token_scorer(h).squeeze(-1)  # (B, T)
        token_weights = masked_softmax(token_scores.unsqueeze(1).expand_as(in_sentence), in_sentence)
        sentence_vectors = torch.einsum("bst,bth->bsh", token_weights, h)  # (B, S, H)

        exists = in_sentence.any(dim=-1)  # (B, S): sentence s occurs in example b
        sentence_weights = masked_softmax(self.sentence_scorer(sentence_vectors).squeeze(-1), exists)
        document = torch.einsum("bs,bsh->bh", sentence_weights, sentence_vectors)

        has_sentence = exists.any(dim=-1, keepdim=True)
        return torch.where(has_sentence, document, masked_mean(h, mask))
