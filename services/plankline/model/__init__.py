"""The sCNN classifier: architecture, data, training, evaluation, export and inference."""
