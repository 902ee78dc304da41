"""What each Kubeflow pipeline step does, as plain functions (no kfp import).

`components/<step>/component.py` wraps these in KFP components; they can also be called directly.
"""
