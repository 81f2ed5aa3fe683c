"""Harness for running real parts on loopback: a Kubernetes control plane in a box, free ports, Redis."""
