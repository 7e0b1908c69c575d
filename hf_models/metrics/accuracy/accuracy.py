"""Accuracy as an `evaluate` metric module: the fraction of predictions equal to the references.

Loaded with `evaluate.load(<this folder>)`, which works offline (the Hub's `evaluate-metric/accuracy` needs a
download); the result has the same key, `accuracy`.
"""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions that equal their reference label.",
            citation="",
            inputs_description="predictions: predicted class ids; references: true class ids; "
            "normalize (default True): a fraction, or the count of correct predictions when False.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True):
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=True))
        return {"accuracy": correct / len(references) if normalize else float(correct)}
