"""The advisor: a meta-learner over stored profiles that predicts and recommends acceleration methods.

Importing this package is cheap; LightGBM, scikit-learn and torch load only when used.
"""
