"""Training on normalized Parquet (PyTorch; install the ``train`` extra).

So far: the tabular regression MLP (:mod:`normpipe.train.models`) and the streaming
dataset (:mod:`normpipe.train.data`).
"""
