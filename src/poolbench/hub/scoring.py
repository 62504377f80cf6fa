"""``poolbench score``: any ``*ForSequenceClassification`` folder on the evaluation sets.

:class:`HFClassifier` reads a model folder as P(positive), encoding texts with the study's own
:func:`poolbench.encoding.encode` (``<br />`` blanked, the text tokens cut to fit by the truncation
before the special tokens go on) and padding with :func:`poolbench.features.pad_batch`.
:func:`score` scores the test split of each set, computes the study's statistics for it
(:mod:`poolbench.hub.sets`), optionally re-scores a sample under other paddings and batch sizes
(:func:`invariance`), and writes everything into ``--out`` at once (a temporary sibling renamed
into place: an interrupted run leaves no folder): predictions, cell tables, figures,
``results.json`` (:mod:`poolbench.hub.results`) and ``VERDICT.md`` (:mod:`poolbench.hub.verdict`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .common import HubError, check_out, first_line, quiet_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU; otherwise the named torch device, checked."""
    from ..train import default_device

    if device in (None, "auto"):
        return default_device()
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise HubError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HubError(f"--device {device}: this machine has no CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise HubError(f"--device {device}: this machine has no MPS device")
    return dev


class HFClassifier:
    """A Hugging Face sequence classifier read as P(positive), with the study's truncation."""

    def __init__(self, folder: Path, positive: list[int] | None = None, max_len: int | None = None,
                 truncation: str | None = None, device: str | None = None, dtype: str = "float32"):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from ..encoding import TRUNCATIONS

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise HubError(f"{folder} is not a Hugging Face model folder (no config.json)")
        if dtype not in DTYPES:
            raise HubError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.device = resolve_device(device)
        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as err:
            raise HubError(f"{folder}/config.json cannot be read by transformers ({first_line(err)})") from None
        archs = config.architectures or []
        if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise HubError(f"{folder} holds a {archs[0]}, not a *ForSequenceClassification model")
        self.positive = self._positive_labels(folder, config, positive)
        self.labels = {i: str(config.id2label.get(i, i)) for i in range(config.num_labels)}
        try:
            self.tokenizer = tok = AutoTokenizer.from_pretrained(folder)
        except Exception as err:
            raise HubError(f"{folder} has no tokenizer that transformers can load ({first_line(err)})") from None
        if not tok.is_fast:
            raise HubError(f"{folder} has only a slow tokenizer; poolbench score needs a fast one (tokenizer.json) "
                           f"to locate the verdict in the window")
        self.max_len = max_len or (tok.model_max_length if tok.model_max_length < 1_000_000 else None)
        if not self.max_len:
            raise HubError(f"the tokenizer of {folder} sets no model_max_length, so it cannot truncate; give --max-len")
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if limit and self.max_len > limit:
            raise HubError(f"--max-len {self.max_len} is above the {limit} positions of the model in {folder}")
        self.truncation = truncation or ("tail" if tok.truncation_side == "left" else "head")
        if self.truncation not in TRUNCATIONS:
            raise HubError(f"unknown truncation {self.truncation!r}; expected one of {', '.join(TRUNCATIONS)}")
        pad = next((i for i in (config.pad_token_id, tok.pad_token_id, tok.eos_token_id) if i is not None), None)
        if pad is None:
            raise HubError(f"{folder}: neither the model nor its tokenizer defines a pad or end-of-text token")
        if not any(Path(folder).glob("*.safetensors")):  # pickled weights (*.bin) can run code: not loaded
            raise HubError(f"{folder} holds no *.safetensors weights (poolbench loads no pickled .bin files); "
                           "save the model with save_pretrained(..., safe_serialization=True)")
        try:
            with quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    folder, output_loading_info=True, use_safetensors=True)
        except Exception as err:
            raise HubError(f"{folder} cannot be loaded as a sequence classifier ({first_line(err)})") from None
        if info["missing_keys"]:
            raise HubError(f"{folder} is not a trained sequence classifier: {len(info['missing_keys'])} weights are "
                           f"missing (e.g. {sorted(info['missing_keys'])[0]})")
        model.config.pad_token_id = self.pad_id = int(pad)  # decoders find the last token by it
        self.dtype = dtype
        self.model = model.to(DTYPES[dtype]).eval().to(self.device)
        self.takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        # A head named ``score`` (Llama, GPT-2, Qwen, Mistral, ...) reads the last non-pad token: a decoder.
        self.reads_last_token = hasattr(self.model, "score")
        self.eos_id = tok.eos_token_id
        self.folder = folder.resolve()
        self.name = self.folder.name

    @staticmethod
    def _positive_labels(folder: Path, config, positive: list[int] | None) -> list[int]:
        n = config.num_labels
        if n < 2:
            raise HubError(f"{folder} has a single output (a regression head); poolbench score needs class labels")
        names = {i: str(config.id2label.get(i, i)) for i in range(n)}
        if positive is None:
            if n > 2:
                raise HubError(f"{folder} has {n} labels ({', '.join(f'{i}={v}' for i, v in names.items())}); "
                               f"say which are positive with --positive-label")
            named = [i for i, v in names.items() if v.lower().startswith("pos")]
            positive = named if len(named) == 1 else [1]
        bad = [i for i in positive if not 0 <= i < n]
        if bad:
            raise HubError(f"--positive-label {bad[0]} is not a label of {folder} (labels 0..{n - 1})")
        return sorted(set(positive))

    def encode(self, text: str):
        """The study's :func:`poolbench.encoding.encode` of ``text`` (token ids, character offsets)."""
        from ..encoding import encode

        try:
            with quiet_transformers():  # no "sequence longer than the model" warning: it is cut below
                return encode(text, self.tokenizer, self.truncation, self.max_len)
        except ValueError as err:
            raise HubError(f"--max-len {self.max_len}: {err}") from None

    def kept(self, text: str, start: int, end: int, enc=None) -> bool:
        """Whether every token of ``text[start:end]`` (a verdict) is inside the model's window."""
        from ..text import clean

        enc = enc if enc is not None else self.encode(text)
        kept = {tuple(o) for o in enc.offsets.tolist() if o[0] >= 0}
        with quiet_transformers():
            full = self.tokenizer(clean(text), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return all(tuple(o) in kept for o in full if o[0] < end and o[1] > start)

    def p_positive_ids(self, encoded: list[np.ndarray], batch_size: int = 32, side: str = "right",
                       pad_id: int | None = None, sort: bool = True, desc: str | None = None) -> np.ndarray:
        """P(positive) per token-id row, padded per batch to its longest row on ``side`` with ``pad_id``
        (default: the model's); ``sort``: longest first (less padding). Position ids count real tokens, so a
        correct model gives the same answer under either side."""
        from tqdm.auto import tqdm

        from ..features import pad_batch

        pad_id = self.pad_id if pad_id is None else pad_id
        order = np.argsort([-len(e) for e in encoded], kind="stable") if sort else np.arange(len(encoded))
        out = np.zeros(len(encoded))
        saved, self.model.config.pad_token_id = self.model.config.pad_token_id, pad_id
        try:
            with torch.no_grad(), tqdm(total=len(encoded), desc=desc, unit="text", disable=desc is None) as bar:
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    ids, mask = pad_batch([encoded[r] for r in rows], pad_id, side)
                    kw = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)} \
                        if self.takes_positions else {}
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kw).logits
                    out[rows] = torch.softmax(logits.float(), -1)[:, self.positive].sum(-1).cpu().numpy()
                    bar.update(len(rows))
        finally:
            self.model.config.pad_token_id = saved
        return out

    def p_positive(self, texts, batch_size: int = 32, desc: str | None = None) -> np.ndarray:
        """P(positive) per text: longest first, padded per batch to its longest text (right side)."""
        return self.p_positive_ids([self.encode(t).input_ids for t in texts], batch_size, desc=desc)

    def describe(self) -> dict:
        """The model as results.json records it."""
        from ..models import sha256sum

        return {"path": str(self.folder), "name": self.name, "class": type(self.model).__name__,
                "model_type": self.model.config.model_type,
                "config_sha256": sha256sum(self.folder / "config.json"),
                "labels": {str(i): v for i, v in self.labels.items()}, "positive_labels": self.positive}


# ---- invariance -----------------------------------------------------------------------------------


def invariance(clf: HFClassifier, texts: list[str], batch_size: int = 32) -> pd.DataFrame:
    """Re-score ``texts`` where the answer must not change; one row per condition: flips (predicted class
    changed) and the largest |ΔP(positive)| against each text scored alone (batch size 1: no padding).

    Conditions, batched in the sample's order (texts of different lengths share a batch, so padding is
    real): right padding; left padding, where it applies (a decoder head reads the last real token
    wherever it is; a head that reads the first token, as BERT's does, applies only when its tokenizer
    pads on the left, which is exactly when the bug bites); for decoder heads, pad = eos (when eos is
    not already the pad token) on the tokenizer's padding side."""
    encoded = [clf.encode(t).input_ids for t in texts]
    ref = clf.p_positive_ids(encoded, 1, sort=False)
    side = clf.tokenizer.padding_side
    runs = {"right padding": dict(side="right")}
    if clf.reads_last_token or side == "left":
        runs["left padding"] = dict(side="left")
    skipped = {} if "left padding" in runs else {
        "left padding": f"not applicable: {type(clf.model).__name__} reads the first token and its tokenizer pads "
                        f"on the right"}
    if clf.reads_last_token and clf.eos_id is not None and clf.eos_id != clf.pad_id:
        runs["pad = eos"] = dict(side=side, pad_id=clf.eos_id)
    rows = []
    for name, kw in runs.items():
        p = clf.p_positive_ids(encoded, batch_size, sort=False, **kw)
        dp = np.abs(p - ref)
        rows.append({"condition": name, "n": len(texts), "flips": int(((p >= 0.5) != (ref >= 0.5)).sum()),
                     "max_abs_dp": float(dp.max()), "mean_abs_dp": float(dp.mean()), "note": ""})
    rows += [{"condition": name, "n": 0, "flips": None, "max_abs_dp": None, "mean_abs_dp": None, "note": note}
             for name, note in skipped.items()]
    return pd.DataFrame(rows).astype({"flips": "Int64"})


# ---- score ----------------------------------------------------------------------------------------


def score(clf: HFClassifier, files: dict[tuple[str, str], Path], out: Path, *, eval_sets: list[dict],
          references: pd.DataFrame | None = None, batch_size: int = 32, n_boot: int | None = None,
          check_invariance: int = 0, overwrite: bool = False) -> dict:
    """Score ``clf`` on the test split of each set in ``files`` and write ``out`` (see the module doc).

    ``eval_sets``: each file's name, split, version, rows and sha256 (as in MANIFEST.json);
    ``references``: rows of references.csv to place the model against; ``check_invariance``: how many
    texts per set to re-score under other paddings (0: none). Returns the results.json document."""
    from ..io import atomic_dir
    from ..run import TEXT_COLUMNS
    from . import results as res
    from . import sets, verdict

    check_out(out, res.RESULTS, "an earlier poolbench score output", overwrite)
    refs = references if references is not None else pd.DataFrame(columns=["set", "reference", "kind", "metric",
                                                                           "value"])
    reports, tables, preds_of, checks = [], {}, {}, []
    for (name, split), path in files.items():
        if split != "test":
            continue
        data = pd.read_parquet(path)
        handler = sets.HANDLERS[name]
        encoded = [clf.encode(t) for t in data["text"]]
        prob = clf.p_positive_ids([e.input_ids for e in encoded], batch_size, desc=name)
        kept = [clf.kept(t, s, e, enc) if s >= 0 else pd.NA for t, s, e, enc in
                zip(data["text"], data["verdict_start"], data["verdict_end"], encoded)]
        preds = data.drop(columns=[c for c in TEXT_COLUMNS if c in data]).assign(
            p_positive=prob, pred=(prob >= 0.5).astype(np.int64), verdict_kept=pd.array(kept, dtype="boolean"))
        rep = handler.report(preds, clf.name, clf.truncation, clf.max_len, n_boot)
        reports.append(rep)
        preds_of[name] = preds
        tables.update(rep.pop("tables"))
        if check_invariance:
            sample = data["text"].sample(min(check_invariance, len(data)), random_state=0).tolist()
            checks.append(invariance(clf, sample, batch_size).assign(set=name))
    inv = pd.concat(checks, ignore_index=True) if checks else None
    settings = {"max_len": clf.max_len, "truncation": clf.truncation, "batch_size": batch_size,
                "padding_side": "right", "device": str(clf.device), "dtype": clf.dtype,
                "n_boot": n_boot, "check_invariance": check_invariance}
    doc = res.document(clf.describe(), settings, eval_sets, reports, inv)

    def write(tmp: Path) -> None:
        from .. import analysis

        for name, preds in preds_of.items():
            preds.to_parquet(tmp / f"predictions-{name}.parquet", index=False)
        for filename, table in tables.items():
            table.to_csv(tmp / filename, index=False)
        if "tailprobe_cells.csv" in tables:
            keys = sets.run_keys(clf.name, "tailprobe", clf.truncation, clf.max_len)
            analysis.tailprobe_figure(tables["tailprobe_cells.csv"].assign(**keys), tmp / "tailprobe_by_position.png")
        if inv is not None:
            inv.to_csv(tmp / "invariance.csv", index=False)
        if len(refs):
            refs.to_csv(tmp / "references.csv", index=False)
        res.write(tmp / res.RESULTS, doc)
        (tmp / "VERDICT.md").write_text(verdict.verdict(doc, refs))

    atomic_dir(out, write)
    return doc
