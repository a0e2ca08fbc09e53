"""Classifier heads that change how much of the model a prediction needs."""
