"""Serving the trained decoder: the KServe InferenceService that runs the Triton export (`inferenceservice`: a
pure builder, create-or-update, the wait for its rollout), the Open Inference (v2) client that calls it
(`client`, with `payload` for binary tensors), and a KServe custom predictor for the torch model (`predictor`,
`asymvae serve`). Kubernetes API access goes through `asymvae.kube`, shared with the training jobs in
`asymvae.cluster`.

The predictor's dependency, KServe's Python model server, is the `serve` extra (`pip install 'asymvae[serve]'`);
only `asymvae.serving.predictor` imports it.
"""
