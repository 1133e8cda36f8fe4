"""The control plane: every model decision, made by one controller out of plain classes.

``controller`` (the decider) composes ``dbgd_rounds`` (minor updates), ``drift`` (ADWIN on CTR),
``retrain_policy`` (when to retrain, on which window), ``gate`` (promote only if not worse offline) and
``guardrail`` (roll back on an online CTR drop).  What it depends on is handed in: ``clock`` (wall or
simulated time), ``store`` (state that survives a leader change), ``trainer`` (how a retrain job runs)
and the model registry.  No Kafka or Faust in here: :mod:`stream.agents` feeds it messages and ticks.
"""
