"""The developer's local control plane: real Kubernetes binaries on loopback, fake nodes by kwok."""
