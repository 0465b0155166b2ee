"""A fine-tuned classifier's checks: the lines about whether it learned never contradict each other."""

from __future__ import annotations


def test_a_loss_near_guessing_is_said_with_the_accuracy_beside_it(caplog):
    """Round three: "has not learned" (loss 0.684) sat beside "training sample accuracy 0.723". The warning now
    comes only when the accuracy is also no better than the commonest label; else a notice says both."""
    import logging
    import math

    import torch

    from lookalike.data import Record
    from lookalike.tasks.cls import check_learned

    records = [Record(str(i), f"t{i}", label="pos" if i % 2 else "neg") for i in range(100)]

    class Tok:
        def __call__(self, texts, pairs=None, **kw):
            return {"input_ids": torch.tensor([[int(t[1:])] for t in texts])}

    class Net:
        device = "cpu"

        def __init__(self, right_share):
            self.right = right_share

        def eval(self):
            pass

        def __call__(self, input_ids):
            i = input_ids[:, 0]
            gold = i % 2
            wrong = (i % 100) >= int(100 * self.right)
            pred = torch.where(wrong, 1 - gold, gold)
            logits = torch.nn.functional.one_hot(pred, 2).float()
            return type("Out", (), {"logits": logits})()

    to_id, id2label = {"neg": 0, "pos": 1}, {0: "neg", 1: "pos"}
    for right, warned in ((0.72, False), (0.5, True)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            out = check_learned(Net(right), Tok(), records, to_id, id2label, math.log(2), 32, None, None)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert out["accuracy_training_sample"] == right
        assert any("has not learned" in w for w in warnings) == warned
        if not warned:
            assert any("barely confident" in r.getMessage() and "0.720" in r.getMessage() for r in caplog.records)
