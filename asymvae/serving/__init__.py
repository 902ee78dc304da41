"""Serving the trained decoder: the KServe InferenceService that runs the Triton export (`inferenceservice`: a
pure builder, create-or-update, the wait for its rollout) and the Open Inference (v2) client that calls it
(`client`). Kubernetes API access goes through `asymvae.kube`, shared with the training jobs in `asymvae.cluster`.
"""
