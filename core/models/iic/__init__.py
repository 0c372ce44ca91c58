"""Invariant Information Clustering (IIC, Ji et al. 2019): losses, pair generation, nets, model and trainer."""
