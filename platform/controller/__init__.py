"""The autoscaling controller: per-model reconcile loops that turn queue signals into replicas.

`policy` decides (pure), `signals` reads Redis, `backends` apply the decision (local processes or
Kubernetes Deployments), `loop` ties them together once per tick.
"""
