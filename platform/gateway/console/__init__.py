"""The web console at `/console`: fleet, queues, scaling events, jobs and a playground.

Plain HTML, CSS and JavaScript shipped inside the package (`static/`), no CDN: deployments are
often air-gapped. The page polls JSON endpoints under `/console/api/`.
"""
