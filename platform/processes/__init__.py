"""Local process helpers shared by `pagefleet up`, the local controller backend, the benchmarks
and the tests: free ports, children that die with their parent, a private redis-server."""
