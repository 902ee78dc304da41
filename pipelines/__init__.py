"""The Kubeflow pipeline of asymvae (installed as `asymvae_pipelines`), built from `asymvae_components`.

`asymvae_pipeline` defines it; `compiled` writes it and the components as YAML; `local` runs it with
kfp.local; `remote` submits and schedules it on a KFP server. The `asymvae pipeline` command calls these.
This package and `asymvae_components` are the only code that imports kfp; it comes with the kubeflow extra,
which every `asymvae pipeline` command checks before it starts (`asymvae.commands.pipeline`), so that without
it the command stops with one line saying so while every other command and `--help` still work.
"""
