"""``train_tail``: the knowledge-distillation stage fine-tunes the teacher's tail as well, and only that:
the head stays the teacher's, the tail moves, the record says so, and without a KD stage it is refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.reencode import reencode


def _nested_weights(model, nested):
    return {la.name: [np.asarray(w) for w in la.get_weights()] for la in model.get_layer(nested).layers if la.weights}


def _changed(model, teacher_model, nested) -> set[str]:
    """Names of the layers inside ``nested`` whose weights differ from the teacher's."""
    return {name for name, weights in _nested_weights(model, nested).items()
            if any(not np.array_equal(w, t) for w, t in zip(weights, teacher_model.get_layer(name).get_weights()))}


def test_train_tail_moves_the_tail_only_and_is_recorded(teacher, digits, tmp_path):
    import keras

    result = reencode(teacher.path, "feat", "distill", teacher.train, tmp_path / "t.keras", channels=4, epochs=1,
                      kd_epochs=2, train_tail=True)
    model = keras.models.load_model(result.output, compile=False)
    assert _changed(model, teacher.model, "teacher_head") == set()
    assert _changed(model, teacher.model, "teacher_tail") == {"conv3", "logits"}
    assert result.metadata["settings"]["train_tail"] is True
    assert [row["stage"] for row in result.history] == ["distill", "kd", "kd"]
    assert result.history[-1]["ce"] < result.history[-2]["ce"]


def test_train_tail_without_kd_epochs_is_a_usage_error(teacher, tmp_path):
    with pytest.raises(UsageError, match="--kd-epochs"):
        reencode(teacher.path, "feat", "distill", teacher.train, tmp_path / "t.keras", channels=4, epochs=1,
                 train_tail=True)


def test_train_tail_with_pca_is_a_usage_error(teacher, tmp_path):
    with pytest.raises(UsageError, match="pca does not train"):
        reencode(teacher.path, "feat", "pca", teacher.train, tmp_path / "p.keras", channels=4, train_tail=True)
