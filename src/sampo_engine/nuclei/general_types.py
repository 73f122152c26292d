"""Which general nucleus type the clicks point at (the ``types`` classifier of exemplar T2).

A type head (:mod:`sampo_engine.models.type_head`, docs/type_head.md) gives every nucleus the
probability of each general type it was trained on (inflammatory, epithelial, stromal, other),
supervised by 48,000 expert-classed nuclei. Three clicks on lymphocytes then need not teach a
classifier what a lymphocyte looks like: they only have to say *which* of the known types is
meant. For every clicked class k the type that separates its exemplars best from the other
exemplars is chosen — the largest gap between the mean probability of k's exemplars and that of
the rest (of all the tile's nuclei when only k was clicked) — and every nucleus takes that
type's probability.

The choice is refused (None, with the reason) when no type separates the exemplars by at least
:data:`MIN_SEPARATION`, or when two clicked classes point at the same type: the clicks then mean
something the head does not know, and the descriptors' classifier answers instead.
"""

from __future__ import annotations

import numpy as np

#: smallest gap in mean probability between a class' exemplars and the others' for its type
MIN_SEPARATION = 0.2


def match_general_types(
    probabilities: np.ndarray,
    rows: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    type_names: tuple[str, ...] = (),
    one_vs_rest: bool = False,
) -> tuple[np.ndarray | None, str]:
    """Class probabilities of every nucleus from the general type each clicked class points at.

    Args:
        probabilities: (N, T) general-type probabilities of every nucleus (rows sum to 1).
        rows, classes: (M,) the exemplar nuclei and their class 0..K-1.
        num_classes: K.
        type_names: the T type names (for the message).
        one_vs_rest: binary T2: only class 0 (the wanted type) is matched; class 1 (everything
            else) gets 1 − p. Otherwise each class is matched and the K chosen types'
            probabilities are renormalised.

    Returns:
        ((N, K) probabilities, a sentence naming the types chosen), or (None, why not).
    """
    p = np.asarray(probabilities, np.float64)
    names = list(type_names) or [f"type {t}" for t in range(p.shape[1])]
    wanted = [0] if one_vs_rest else list(range(num_classes))
    chosen = []
    for k in wanted:
        mine, rest = rows[classes == k], rows[classes != k]
        if len(mine) == 0:
            return None, "each class needs exemplars of its own"
        # only this class clicked: compare with the tile's nuclei as a whole
        reference = p[rest].mean(axis=0) if len(rest) else p.mean(axis=0)
        gap = p[mine].mean(axis=0) - reference
        t = int(np.argmax(gap))
        if gap[t] < MIN_SEPARATION:
            return None, (
                f"no general type the type head knows ({', '.join(names)}) tells the clicked "
                f"nuclei apart (best: {names[t]}, gap {gap[t]:.2f})"
            )
        chosen.append(t)
    if len(set(chosen)) < len(chosen):
        return None, "two clicked classes point at the same general type"
    if one_vs_rest:
        p0 = p[:, chosen[0]]
        out = np.stack([p0, 1 - p0], axis=1)
        said = f"the clicks point at the general type '{names[chosen[0]]}'"
    else:
        out = p[:, chosen] + 1e-6
        out /= out.sum(axis=1, keepdims=True)
        said = "the classes point at the general types " + ", ".join(
            f"'{names[t]}'" for t in chosen
        )
    return out, said
