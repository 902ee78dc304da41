"""Serving the trained decoder: a KServe custom predictor for the torch model (`asymvae serve`).

Its dependency, KServe's Python model server, is the `serve` extra (`pip install 'asymvae[serve]'`); only
`asymvae.serving.predictor` imports it.
"""
