"""Second-level models trained on the out-of-fold predictions of the first level.

``net`` (the MLP), ``params`` (its hyper-parameters), ``space`` (the tuning search space),
``inputs`` (OOF/test arrays and windows), ``fit`` (every fold and seed), ``tune`` (Optuna),
``store`` (write and reload an experiment; train and write one).
"""
