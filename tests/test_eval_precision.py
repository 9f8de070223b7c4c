"""One checkpoint, one accuracy: test metrics in float32 unless told otherwise, named in eval.json."""

import torch
from foreign_models import CLASSES, airbench, split

from convlens.config import EvalConfig
from convlens.train.evaluate import evaluate_split, predict
from convlens.train.precision import Precision


def test_test_metrics_are_float32_by_default_whatever_the_training_precision():
    from convlens.train.evaluate import test_precision

    assert EvalConfig().precision == "fp32"
    model, data = airbench(), split(8)
    trained = Precision(torch.device("cpu"), True, False, 1)  # a run trained under bf16 autocast
    result, logits = evaluate_split(model, data, list(CLASSES), precision=test_precision(trained))
    assert result["precision"] == "float32"
    torch.testing.assert_close(logits, predict(model, data))  # what every analysis computes
    result, bf16 = evaluate_split(model, data, list(CLASSES), precision=test_precision(trained, "train"))
    assert result["precision"] == "bf16 autocast" and not torch.equal(bf16, logits)
