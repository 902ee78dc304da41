"""What the tests share and run against, none of it a test: stand-ins for runtimes that cannot run here (each names
the upstream file it models), fakes of faults, tiny models and configs, offline CRD validation."""
