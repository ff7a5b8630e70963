"""The parts of ``scripts/chaos.py``: infrastructure, service fleet, faults, checks, report.

One module per job: :mod:`.infra` starts the broker(s) and PostgreSQL, :mod:`.fleet` runs
the five example services as ``choreo run`` processes (several replicas each),
:mod:`.placer` places orders, :mod:`.faults` injects poison records, :mod:`.scenarios`
names what each scenario does while orders flow, :mod:`.state` reads the services'
databases, :mod:`.checks` turns state and log into the figures, :mod:`.runner` runs one
scenario from start to verdict.
"""
