"""Correlation of vendor notifications into operation outcomes (pure: no Kafka).

Its face is :mod:`consumer.correlator`; inside: ``engine`` (event time, the reorder buffer,
budgets), ``rules`` (the state machine) with ``transitions`` (its tables), ``ordering`` (where a
notification falls in event time), ``objects`` (open operations and markers), ``state`` (how
they are held, written to the changelog and restored), ``openops`` (the open-operations view),
``outcome`` (the emitted record), ``config`` (timeouts and limits).
"""
