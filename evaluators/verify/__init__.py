"""``threedb verify``: complete verification (bounds, branch and bound, MILP; :mod:`threedb.robustness.verification`) of one
VNN-COMP instance (``NET.onnx SPEC.vnnlib``), of a VNN-COMP benchmark folder (``--instances``), or of a
classifier on dataset images at an L-inf radius (a job config, written as a robustness report);
docs/verify.md."""
