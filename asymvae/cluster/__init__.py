"""Running training on Kubernetes: the job spec and its PyTorchJob and TrainJob builders (`jobspec`,
`pytorchjob`, `trainjob`, pure: no cluster, no kubernetes client), the runner that creates a job and waits for
its verdict (`runner`, `discovery`, `verdict`, `interrupt`, `errors`), the launchers (`submit`, `local`), and the
step's own pod (`pod`).
Kubernetes API helpers shared with serving live in `asymvae.kube`.
The library never imports kfp: KFP components call these functions.
"""
