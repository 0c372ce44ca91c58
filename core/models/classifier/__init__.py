"""Classifier family: k-NN, linear SVM and MLP grid-searched on cached features."""
