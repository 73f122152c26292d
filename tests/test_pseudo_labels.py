"""Pseudo labels from dots (``sampo_engine.data.pseudo``): nuclei classed by the dots inside."""

import numpy as np
import pytest

from sampo_engine.data.pseudo import pseudo_labels_from_points


def test_nuclei_take_their_dots_class_and_the_rest_is_left_out():
    inst = np.zeros((20, 30), np.int32)
    inst[2:6, 2:6] = 4  # one dot of class 1
    inst[2:6, 10:14] = 7  # two dots of class 2, one of class 3: majority 2
    inst[10:14, 2:6] = 9  # no dot: left out
    inst[10:14, 10:14] = 11  # one dot of each of two classes: ambiguous, left out
    dots = [(3, 3), (11, 3), (12, 4), (13, 3), (11, 11), (12, 12), (25, 15)]  # (x, y)
    classes = [1, 2, 2, 3, 1, 3, 2]  # the last dot lies on background
    pseudo = pseudo_labels_from_points(inst, dots, classes)
    assert (pseudo.kept, pseudo.without_dot, pseudo.ambiguous, pseudo.dots_used) == (2, 1, 1, 4)
    assert set(np.unique(pseudo.inst)) == {0, 4, 7}
    assert np.all(pseudo.cls[inst == 4] == 1) and np.all(pseudo.cls[inst == 7] == 2)
    assert not pseudo.cls[(inst == 9) | (inst == 11) | (inst == 0)].any()
    assert pseudo.inst.dtype == np.int32 and pseudo.cls.dtype == np.uint8
    with pytest.raises(ValueError, match="2 dots but 1 classes"):
        pseudo_labels_from_points(inst, dots[:2], classes[:1])
