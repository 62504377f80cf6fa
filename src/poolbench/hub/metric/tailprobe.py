"""Tail-sentiment probe metric for 🤗 evaluate: does a classifier catch a verdict in the last sentence?

    import evaluate
    import poolbench.hub
    probe = evaluate.load(poolbench.hub.METRIC, keep_in_memory=True)  # this file, installed with poolbench
    probe.compute(predictions=p_positive, references=test["label"], body_label=test["body_label"],
                  condition=test["condition"], position=test["position"], length_bin=test["length_bin"],
                  verdict_review_id=test["verdict_review_id"])

The statistics are the poolbench study's own (``poolbench.hub.probe_report``, which calls
``poolbench.analysis``); the file ships inside the poolbench package (``poolbench.hub.METRIC`` is its
path), so ``pip install poolbench`` is all it needs. It holds no computation of its own.
"""

import datasets
import evaluate
import pandas as pd

from poolbench.hub.sets import probe_report

_DESCRIPTION = """\
Scores binary sentiment predictions on poolbench's tail-sentiment probe (a polar verdict sentence at the
start, middle or end of a body that agrees with it or reads the other way). Returns the accuracy per
condition x position x length_bin cell with its 95% CI over verdicts, the share of contrast items
predicted as the body's label (follows_body), and the end - start accuracy gap on contrast items with its
verdict-clustered paired bootstrap CI and p (the study's `position` comparison), per length and over both.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: P(positive) or 0/1 predictions, one per probe item (>= 0.5 counts as positive).
    references: the items' `label` (the verdict's polarity, 0/1).
    body_label: the polarity of the item's body (0/1).
    condition: "agree" or "contrast".
    position: "start", "middle" or "end" (where the verdict sits).
    length_bin: "short" or "long".
    verdict_review_id: the verdict's id; the bootstrap resamples verdicts (each at every position).
    n_boot: bootstrap draws (default: the study's, 10,000 for a CI and 50,000 for the gap's test).
    seed: bootstrap seed (default 0).
Returns:
    accuracy: overall accuracy.
    follows_body: share of contrast items predicted as body_label.
    gap: end - start accuracy on contrast items, all lengths: {diff, ci_low, ci_high, p, units, ...}.
    gap_by_length: the same per length_bin.
    cells: one record per condition x position x length_bin: n, accuracy, accuracy_ci_low,
        accuracy_ci_high, follows_body.
"""

_CITATION = "poolbench: which summary of a transformer's hidden states should feed a sentiment classifier?"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Tailprobe(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("float64"),
                "references": datasets.Value("int64"),
                "body_label": datasets.Value("int64"),
                "condition": datasets.Value("string"),
                "position": datasets.Value("string"),
                "length_bin": datasets.Value("string"),
                "verdict_review_id": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, references, body_label, condition, position, length_bin, verdict_review_id,
                 n_boot=None, seed=0):
        table = pd.DataFrame({"p_positive": predictions, "label": references, "body_label": body_label,
                              "condition": condition, "position": position, "length_bin": length_bin,
                              "verdict_review_id": verdict_review_id})
        report = probe_report(table, n_boot=n_boot, seed=seed)
        gaps = report["gaps"].to_dict("records")
        return {"accuracy": report["accuracy"], "follows_body": report["follows_body"],
                "gap": gaps[0] if gaps else None, "gap_by_length": gaps[1:],
                "cells": report["cells"].to_dict("records")}
