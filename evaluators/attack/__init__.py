"""``threedb attack``: adversarial attacks (FGSM, PGD, APGD-CE/DLR, APGD-T, Square; BPDA and EOT wrappers)
on a dataset, worst case over attacks per example, written as a robustness report (docs/attacks.md)."""
