"""tether's benchmarks against its peers: ``python -m bench`` runs every scenario and writes BENCHMARKS.md.

Scenario modules (``python -m bench.<name>`` runs one): detection, idle_cutoff, recovery, cost,
throughput, outbox, service; ``python -m bench.chaos`` is the soak. Each scenario's ``run()`` returns a
:class:`bench._common.Scenario` whose rows hold the figures for every system measured in that run.
"""
