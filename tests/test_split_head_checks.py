"""Checks of trained split heads (``sampo_engine.experiments.split_head_checks``): the
foreground threshold is chosen on the training images, not on the held-out ones it is reported
on (the stages themselves run end to end in test_split_head_study.py)."""

from sampo_engine.experiments.split_head_checks import thresholds_table


def test_the_threshold_is_chosen_on_training_images_and_its_gain_paired_by_seed():
    rows = []
    for seed in (0, 1):
        for t, train_pq, test_pq in ((0.4, 0.6, 0.50 + 0.01 * seed), (0.5, 0.5, 0.45)):
            for split, pq in (("train", train_pq), ("test", test_pq)):
                for ds in ("consep_train", "gbm40"):
                    rows.append({"split": split, "dataset": ds, "seed": seed, "threshold": t,
                                 "pq": pq})  # fmt: skip
    chosen, lines = thresholds_table(rows)
    assert chosen == 0.4  # the better training PQ, whatever the held-out one says
    text = "\n".join(lines)
    assert "| 0.4 (chosen) | 60.0 | 50.5 | 50.5 | 50.5 |" in text and "| 0.5 (shipped) |" in text
    assert "0.4 minus 0.5, per seed: +5.0 / +6.0." in text
