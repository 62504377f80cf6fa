"""Where [CLS] looks: attention mass on the probe's verdict, layer by layer, frozen against fine-tuned.

Two measures on probe-test rows (``text`` with the verdict at ``text[verdict_start:verdict_end]``):

* :func:`cls_attention_mass` – for each layer, [CLS]'s attention probabilities summed over the
  verdict's tokens, averaged over heads (``mass``; ``mass_head_max`` is the largest head's). For the
  pretrained backbone (``weights=None``: what the frozen regime sees) or a run's trained backbone
  layers: a ``topk`` run's ``top.layers.i`` replace the backbone's layer ``L-k+i``, a ``finetune``
  run's ``backbone.*`` weights load into the backbone.
* :func:`pooling_attention_mass` – the learned ``attention`` pooling's softmax weight on the
  verdict's tokens, from the states the pooling saw in its run: the final state of the pretrained
  backbone (``frozen``), the trained top layers' output from the cached entry state (``topk``), or
  the trained backbone's final state (``finetune``). Cached states are rounded to the cache's dtype
  (float16 by default) as in the run; the weights are checked against the pooling's own output.

Architectures (:mod:`poolbench.arch`): ``cls_attention_mass`` measures encoders (BERT, RoBERTa: the
first token, [CLS] or <s>) and refuses decoders, whose first token attends only to itself under the
causal mask. ``pooling_attention_mass`` measures any architecture's ``attention`` pooling runs.
What trained is read from the run spec's ``kind`` (frozen, topk, finetune), never the regime's name.

Verdict tokens are the text tokens whose character span overlaps ``[verdict_start, verdict_end)``
after :func:`poolbench.encoding.encode` with the run's truncation and ``max_len``. A verdict that
truncation removes entirely gives an empty mask: the row is kept with ``verdict_cut=True`` and
``mass`` NaN, and :func:`summarise` counts such rows (``n_cut``) instead of averaging them.
``tokens`` counts every real token, [CLS] and [SEP] included, so ``verdict_tokens / tokens`` is
the mass of uniform attention (the chance baseline).

:func:`summarise` gives mean and 95% bootstrap CI over examples per measure × regime × layer ×
condition × verdict position ("all" pools a level); :func:`figure` draws both measures in one figure.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import arch
from .encoding import Encoded, encode
from .features import pad_batch

META = ("condition", "position", "length_bin")
POSITIONS = ("start", "middle", "end")
MEASURES = ("cls_attention", "attention_pooling")
CACHE_DTYPES = {"float16": torch.float16, "float32": torch.float32, None: None}
KEYS = ["measure", "regime", "trained_layers", "layer", "condition", "position"]


# --------------------------------------------------------------------------------------------
# Verdict tokens
# --------------------------------------------------------------------------------------------


def verdict_mask(encoded: Encoded, start: int, end: int) -> np.ndarray:
    """(T,) bool: text tokens whose character span overlaps ``[start, end)`` (special tokens never)."""
    off = encoded.offsets
    real = off[:, 0] >= 0
    return real & (off[:, 0] < end) & (off[:, 1] > start)


def _check_examples(examples: pd.DataFrame) -> None:
    missing = [c for c in ("id", "text", "verdict_start", "verdict_end") if c not in examples.columns]
    if missing:
        raise ValueError(f"examples lack column(s) {missing}: pass probe rows (id, text, verdict_start, verdict_end)")
    bad = examples["verdict_start"].to_numpy() >= examples["verdict_end"].to_numpy()
    if bad.any():
        raise ValueError(f"{int(bad.sum())} example(s) have an empty verdict span (verdict_start >= verdict_end), "
                         f"e.g. {examples.loc[bad, 'id'].iloc[0]!r}")


def encode_examples(examples: pd.DataFrame, tokenizer, truncation: str, max_len: int) -> pd.DataFrame:
    """Per example: its :class:`Encoded`, verdict mask, token counts and whether the verdict was cut.

    ``verdict_tokens_full`` counts the verdict's tokens without truncation, so a partly cut verdict
    shows as ``0 < verdict_tokens < verdict_tokens_full``.
    """
    _check_examples(examples)
    rows = []
    for text, start, end in zip(examples["text"], examples["verdict_start"], examples["verdict_end"]):
        enc = encode(text, tokenizer, truncation, max_len)
        full = encode(text, tokenizer, truncation, 1 << 30)  # nothing truncated
        mask = verdict_mask(enc, int(start), int(end))
        n_full = int(verdict_mask(full, int(start), int(end)).sum())
        if n_full == 0:
            raise ValueError(f"no token of {text[:40]!r}... overlaps its verdict span [{start}, {end})")
        rows.append({"encoded": enc, "mask": mask, "verdict_tokens": int(mask.sum()),
                     "verdict_tokens_full": n_full, "tokens": len(enc.input_ids)})
    out = pd.DataFrame(rows, index=examples.index)
    out["verdict_cut"] = out["verdict_tokens"] == 0
    return out


def _meta(examples: pd.DataFrame) -> pd.DataFrame:
    cols = ["id", *[c for c in META if c in examples.columns]]
    out = examples[cols].copy()
    for c in META:
        if c not in out.columns:
            out[c] = "all"
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Runs' weights
# --------------------------------------------------------------------------------------------


def read_run(weights: Path) -> tuple[dict, dict]:
    """(state dict, spec) of a run's ``model.safetensors`` (the spec is its metadata "spec")."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    if "spec" not in meta:
        raise ValueError(f"{weights} carries no run spec (metadata 'spec'); rebuild the run's weights")
    return load_file(str(weights)), json.loads(meta["spec"])


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _kind(spec: dict) -> str:
    """What trained in a run (its regime's ``kind``: frozen, topk or finetune), whatever the regime's name."""
    kind = spec.get("kind")
    if kind not in ("frozen", "topk", "finetune"):
        raise ValueError(f"the run spec of {spec['run']['regime']!r} has kind {kind!r}, not frozen, topk or finetune: "
                         f"rebuild the run's weights")
    return kind


def apply_trained_backbone(backbone, state: dict, spec: dict) -> int:
    """Put a run's trained backbone layers into ``backbone``; returns how many top layers trained.

    By the regime's kind: ``topk``: ``top.layers.i`` → layer ``L-k+i`` (``top.norm`` → the final norm,
    if any); ``finetune``: every ``backbone.*`` weight; ``frozen``: nothing (0). Refuses weights
    that do not fit.
    """
    from .topk import resolve_trainable_layers, top_layer_count

    run = spec["run"]
    kind = _kind(spec)
    blocks = arch.layers(backbone)
    L = len(blocks)
    if kind == "frozen":
        return 0
    if kind == "topk":
        k = top_layer_count(state)
        declared = resolve_trainable_layers(spec.get("regime", {}).get("trainable_layers", k), run["model"])
        if k < 1 or declared != k:
            raise ValueError(f"topk weights hold {k} top layer(s), the spec declares trainable_layers={declared!r}")
        if k > L:
            raise ValueError(f"topk weights hold {k} layers but the backbone has {L}")
        for i in range(k):
            blocks[L - k + i].load_state_dict(_sub(state, f"top.layers.{i}."), strict=True)
        norm, trained_norm = arch.final_norm(backbone), _sub(state, "top.norm.")
        if norm is not None and trained_norm:
            norm.load_state_dict(trained_norm, strict=True)
        return k
    trained = _sub(state, "backbone.")
    if not trained:
        raise ValueError("finetune weights hold no backbone.* weights")
    missing, unexpected = backbone.load_state_dict(trained, strict=False)
    if unexpected:
        raise ValueError(f"finetune weights do not fit the backbone (unexpected {unexpected[:3]})")
    prefix = arch.for_model(backbone).layers + "."
    trained_blocks = {int(key[len(prefix):].split(".")[0]) for key in trained if key.startswith(prefix)}
    return L - min(trained_blocks) if trained_blocks else 0


def _check_settings(spec: dict | None, truncation: str | None, max_len: int | None) -> tuple[str, int]:
    """The truncation and max_len to encode with: the run's (refusing others), else head / 128."""
    if spec is None:
        return truncation or "head", int(max_len or 128)
    run = spec["run"]
    for name, value in (("truncation", truncation), ("max_len", max_len)):
        if value is not None and value != run[name]:
            raise ValueError(f"the run was trained with {name}={run[name]!r}, not {value!r}: the verdict mask must "
                             f"use the run's own setting (pass None)")
    return run["truncation"], int(run["max_len"])


def _describe(spec: dict | None, trained_layers: int) -> dict:
    if spec is None:
        return {"regime": "frozen", "trained_layers": 0, "pooling": None, "seed": -1}
    run = spec["run"]
    return {"regime": run["regime"], "trained_layers": trained_layers, "pooling": run["pooling"], "seed": run["seed"]}


def _batches(n: int, lengths: np.ndarray, batch_size: int):
    order = np.argsort(-lengths, kind="stable")
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def _pad(items: pd.DataFrame, idx: np.ndarray, pad_id: int, config):
    ids, attn = pad_batch([items["encoded"].iloc[i].input_ids for i in idx], pad_id)
    verdict, _ = pad_batch([items["mask"].iloc[i] for i in idx], False)
    return ids, attn, verdict, arch.position_ids(config, attn)  # as poolbench.features.backbone_hidden_states


# --------------------------------------------------------------------------------------------
# The measures
# --------------------------------------------------------------------------------------------


def cls_attention_mass(model_dir, examples: pd.DataFrame, weights: Path | None = None,
                       truncation: str | None = None, max_len: int | None = None,
                       batch_size: int = 32) -> pd.DataFrame:
    """One row per example × layer (1..L): [CLS]'s attention mass on the verdict's tokens.

    ``mass``: per head, the sum of [CLS]'s attention probabilities over the verdict tokens, averaged
    over heads; ``mass_head_max``: the largest head's sum. ``weights=None``: the pretrained backbone;
    else a run's ``model.safetensors`` (topk or finetune; frozen = the pretrained backbone). Truncation
    and max_len default to the run's (head / 128 for the pretrained backbone).
    """
    from .models import load_backbone, load_tokenizer

    state, spec = read_run(Path(weights)) if weights is not None else (None, None)
    truncation, max_len = _check_settings(spec, truncation, max_len)
    backbone = load_backbone(Path(model_dir))
    adapter = arch.for_model(backbone)
    if adapter.family != "encoder":
        raise ValueError(f"[CLS] attention is measured on encoders only: {model_dir} is a {adapter.model_type} decoder, "
                         f"whose first token attends to itself alone under the causal mask; measure its runs with "
                         f"pooling_attention_mass")
    L = len(arch.layers(backbone))
    k = apply_trained_backbone(backbone, state, spec) if spec is not None else 0
    backbone.set_attn_implementation("eager")  # sdpa returns no attention probabilities
    backbone.eval()
    tokenizer = load_tokenizer(Path(model_dir))
    items = encode_examples(examples, tokenizer, truncation, max_len)

    n = len(items)
    mass = np.full((n, L), np.nan)
    head_max = np.full((n, L), np.nan)
    with torch.inference_mode():
        for idx in _batches(n, items["tokens"].to_numpy(), batch_size):
            ids, attn, verdict, position_ids = _pad(items, idx, tokenizer.pad_token_id, backbone.config)
            out = backbone(input_ids=ids, attention_mask=attn, position_ids=position_ids, output_attentions=True)
            if out.attentions is None or len(out.attentions) != L:
                raise RuntimeError("the backbone returned no attention probabilities (eager attention not in use)")
            probs = torch.stack([a[:, :, 0, :] for a in out.attentions], dim=1).double()  # (B, L, heads, T): [CLS] row
            per_head = (probs * verdict[:, None, None, :].double()).sum(-1)
            mass[idx] = per_head.mean(-1).numpy()
            head_max[idx] = per_head.amax(-1).numpy()
    cut = items["verdict_cut"].to_numpy()
    mass[cut], head_max[cut] = np.nan, np.nan

    meta = _meta(examples)
    desc = _describe(spec, k)
    frames = []
    for layer in range(1, L + 1):
        frames.append(meta.assign(measure="cls_attention", **desc, layer=layer, mass=mass[:, layer - 1],
                                  mass_head_max=head_max[:, layer - 1]))
    out = pd.concat(frames, ignore_index=True)
    counts = items[["verdict_tokens", "verdict_tokens_full", "tokens", "verdict_cut"]].reset_index(drop=True)
    counts = pd.concat([counts] * L, ignore_index=True)
    return pd.concat([out, counts], axis=1).assign(truncation=truncation, max_len=max_len)


def pooling_attention_mass(model_dir, examples: pd.DataFrame, weights: Path, truncation: str | None = None,
                           max_len: int | None = None, batch_size: int = 32,
                           cache_dtype: str | None = "float16") -> pd.DataFrame:
    """One row per example: the ``attention`` pooling's softmax weight on the verdict's tokens.

    ``weights``: the ``model.safetensors`` of an ``attention`` run (frozen, topk or finetune). The
    pooling sees what it saw in training: cached states (frozen: the final one; topk: the entry
    state of the trained top layers) rounded to ``cache_dtype`` (None: no rounding), or the
    finetuned backbone's final state. ``layer`` is L (the pooling reads the final layer).
    """
    from .models import load_backbone, load_tokenizer
    from .pooling import PoolingContext, build_pooling, masked_softmax, prepare
    from .topk import TopLayers, top_layer_count

    state, spec = read_run(Path(weights))
    run = spec["run"]
    if run["pooling"] != "attention":
        raise ValueError(f"{weights} holds a {run['pooling']!r} pooling run, not an 'attention' one")
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {sorted(k for k in CACHE_DTYPES if k)} or None")
    truncation, max_len = _check_settings(spec, truncation, max_len)
    backbone = load_backbone(Path(model_dir)).eval()
    L = len(arch.layers(backbone))
    kind = _kind(spec)
    top, k = None, 0
    if kind == "topk":
        k = top_layer_count(state)
        top = TopLayers(backbone, k)
        top.load_state_dict(_sub(state, "top."), strict=True)
        top.eval()
    elif kind == "finetune":
        k = apply_trained_backbone(backbone, state, spec)

    ctx = PoolingContext(hidden_size=backbone.config.hidden_size, num_layers=1, family=spec.get("family", "encoder"),
                         options=spec.get("pooling", {}).get("options", {}))
    pooling = build_pooling("attention", ctx)
    pooling.load_state_dict(_sub(state, "pooling."), strict=True)
    pooling.eval()
    rounding = CACHE_DTYPES[cache_dtype] if kind in ("frozen", "topk") else None

    tokenizer = load_tokenizer(Path(model_dir))
    items = encode_examples(examples, tokenizer, truncation, max_len)
    n = len(items)
    mass = np.full(n, np.nan)
    with torch.inference_mode():
        for idx in _batches(n, items["tokens"].to_numpy(), batch_size):
            ids, attn, verdict, position_ids = _pad(items, idx, tokenizer.pad_token_id, backbone.config)
            hidden = backbone(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                              output_hidden_states=True).hidden_states
            state_in = hidden[L - k] if top is not None else hidden[L]
            if rounding is not None:
                state_in = state_in.to(rounding).float()
            final = top(state_in, attn)[-1] if top is not None else state_in
            h, real = prepare(final, attn)
            w = masked_softmax(pooling.scorer(h).squeeze(-1), real)
            # The weights must be the ones the pooling itself uses: its output is their weighted sum.
            pooled = pooling([final], attn)
            if not torch.allclose(torch.einsum("bt,bth->bh", w, h), pooled, atol=1e-5, rtol=1e-4):
                raise RuntimeError("AttentionPooling no longer computes its weights as softmax(scorer(h)); "
                                   "update poolbench.attention.pooling_attention_mass")
            mass[idx] = (w.double() * verdict.double()).sum(-1).numpy()
    mass[items["verdict_cut"].to_numpy()] = np.nan
    out = _meta(examples).assign(measure="attention_pooling", **_describe(spec, k), layer=L, mass=mass,
                                 mass_head_max=np.nan)
    counts = items[["verdict_tokens", "verdict_tokens_full", "tokens", "verdict_cut"]].reset_index(drop=True)
    return pd.concat([out, counts], axis=1).assign(truncation=truncation, max_len=max_len)


# --------------------------------------------------------------------------------------------
# Summary and figure
# --------------------------------------------------------------------------------------------


def _bootstrap_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return (float(values[0]), float(values[0])) if len(values) else (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarise(*frames: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean mass and its 95% bootstrap CI over examples per measure × regime × layer × condition × position.

    Several runs of one regime (seeds) are averaged per example first. ``condition``/``position``
    "all" pool that level. ``uniform``: the mean of ``verdict_tokens / tokens`` over the same
    examples (uniform attention's mass); ``ratio`` = mean / uniform. ``n``: examples averaged;
    ``n_cut``: examples whose verdict truncation removed (not averaged). Bootstrap draws are seeded
    from ``seed`` and the condition × position cell, so every measure, regime and layer of a cell
    resamples the same examples.
    """
    if not frames:
        raise ValueError("summarise needs at least one frame")
    df = pd.concat(frames, ignore_index=True)
    df = df.assign(uniform=df["verdict_tokens"] / df["tokens"])
    per_example = (df.groupby(KEYS[:4] + ["id", "condition", "position", "verdict_cut"], dropna=False)
                   [["mass", "uniform"]].mean().reset_index())
    pooled = []
    for cond in (None, "all"):
        for pos in (None, "all"):
            part = per_example.copy()
            if cond:
                part["condition"] = cond
            if pos:
                part["position"] = pos
            pooled.append(part)
    pooled = pd.concat(pooled, ignore_index=True).drop_duplicates(KEYS + ["id"])
    rows = []
    for key, group in pooled.groupby(KEYS, sort=True):
        kept = group[~group["verdict_cut"]]
        values = kept["mass"].to_numpy(dtype=float)
        # Draws depend on the cell only: every measure, regime and layer of a cell resamples the same
        # examples (common random numbers), and a group's CI does not depend on the other groups.
        name = f"{key[KEYS.index('condition')]}|{key[KEYS.index('position')]}"
        low, high = _bootstrap_ci(values, n_boot, seed + zlib.crc32(name.encode()))
        mean = float(values.mean()) if len(values) else np.nan
        uniform = float(kept["uniform"].mean()) if len(kept) else np.nan
        rows.append({**dict(zip(KEYS, key)), "n": len(kept), "n_cut": int(group["verdict_cut"].sum()),
                     "mean": mean, "ci_low": low, "ci_high": high, "uniform": uniform,
                     "ratio": mean / uniform if uniform else np.nan})
    out = pd.DataFrame(rows)
    order = {p: i for i, p in enumerate((*POSITIONS, "all"))}
    return out.sort_values(KEYS[:4] + ["condition", "position"], key=lambda s: s.map(order) if s.name == "position"
                           else s, ignore_index=True)


def regime_label(regime: str, trained_layers: int) -> str:
    if trained_layers == 0:  # no layer trained: the pretrained backbone, whatever the regime is called
        return "frozen"
    if regime == "topk":
        return f"fine-tuned (top {trained_layers})"
    return "fine-tuned" + (f" (top {trained_layers})" if trained_layers else "")


def figure(summary: pd.DataFrame, out_png: Path, condition: str = "all", data: str = "probe test") -> Path:
    """One figure, two panels, by verdict position: left, [CLS]'s mass on the verdict by layer (solid
    frozen, dashed fine-tuned, dotted uniform attention); right, the attention pooling's mass with
    its uniform baseline. 95% bootstrap CIs; examples whose verdict was cut are not included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .io import atomic_write

    s = summary[(summary["condition"] == condition) & summary["position"].isin(POSITIONS)].copy()
    if s.empty:
        raise ValueError(f"the summary has no rows for condition {condition!r} by verdict position")
    s["label"] = [regime_label(r, k) for r, k in zip(s["regime"], s["trained_layers"])]
    labels = sorted(s["label"].unique(), key=lambda x: (x != "frozen", x))
    styles = dict(zip(labels, ["-", "--", "-.", (0, (5, 1))] * 2))
    positions = [p for p in POSITIONS if (s["position"] == p).any()]
    colours = dict(zip(positions, plt.get_cmap("viridis")(np.linspace(0.1, 0.8, len(positions)))))

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.9), gridspec_kw={"width_ratios": [1.5, 1]})
    cls = s[s["measure"] == "cls_attention"]
    for position in positions:
        for label in labels:
            rows = cls[(cls["position"] == position) & (cls["label"] == label)].sort_values("layer")
            if rows.empty:
                continue
            left.plot(rows["layer"], rows["mean"], ls=styles[label], marker="o", ms=3, lw=1.3,
                      color=colours[position], label=f"{position} · {label}")
            left.fill_between(rows["layer"], rows["ci_low"], rows["ci_high"], color=colours[position], alpha=0.15,
                              lw=0)
        base = cls[cls["position"] == position].groupby("layer")["uniform"].mean()
        if len(base):
            left.plot(base.index, base.to_numpy(), ls=":", lw=1, color=colours[position],
                      label=f"{position} · uniform")
    if len(cls):
        layers = sorted(cls["layer"].unique())
        left.set_xticks(layers)
    left.set_xlabel("layer")
    left.set_ylabel("[CLS] attention on the verdict")
    left.set_title("[CLS] attention mass (mean over heads)", fontsize=9)
    left.grid(lw=0.4, alpha=0.6)
    left.legend(fontsize=6.5, ncol=len(positions), frameon=False, loc="upper left")

    pool = s[s["measure"] == "attention_pooling"]
    pool_labels = [x for x in labels if (pool["label"] == x).any()]
    width = 0.8 / max(1, len(pool_labels))
    for i, label in enumerate(pool_labels):
        rows = pool[pool["label"] == label].set_index("position").reindex(positions)
        x = np.arange(len(positions)) + (i - (len(pool_labels) - 1) / 2) * width
        err = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
        right.bar(x, rows["mean"], width, yerr=err, capsize=2, error_kw=dict(lw=0.7),
                  color=[colours[p] for p in positions], edgecolor="0.2", lw=0.6,
                  hatch=None if label == "frozen" else "//")
        right.plot(x, rows["uniform"], "_", ms=14, mew=1.5, color="0.15")
    handles = [Patch(facecolor="0.85", edgecolor="0.2", lw=0.6, hatch=None if x == "frozen" else "//", label=x)
               for x in pool_labels]
    handles.append(Line2D([], [], ls="", marker="_", ms=10, mew=1.5, color="0.15", label="uniform"))
    right.set_xticks(np.arange(len(positions)), positions)
    right.set_xlabel("verdict position")
    right.set_ylabel("pooling weight on the verdict")
    right.set_title("learned attention pooling", fontsize=9)
    right.grid(axis="y", lw=0.4, alpha=0.6)
    if len(pool):
        right.legend(handles=handles, fontsize=7, frameon=False)
    else:
        right.text(0.5, 0.5, "no attention-pooling runs", ha="center", va="center", transform=right.transAxes)
    # Examples whose verdict truncation removed: counted per position, never averaged.
    counts = s.drop_duplicates("position").set_index("position").reindex(positions)
    cut = ", ".join(f"{p} {int(c)} of {int(c + n)}" for p, c, n in zip(positions, counts["n_cut"], counts["n"]))
    fig.text(0.5, -0.01, f"verdict cut away by truncation (not averaged): {cut}", ha="center", fontsize=8)
    fig.suptitle(f"Where [CLS] looks: attention on the verdict sentence ({data}"
                 + ("" if condition == "all" else f", {condition}") + "; 95% bootstrap CI over examples)", fontsize=10)
    fig.tight_layout()
    atomic_write(out_png, lambda p: fig.savefig(p, format="png", dpi=130, bbox_inches="tight",
                                                metadata={"Software": None}))
    plt.close(fig)
    return Path(out_png)
