"""Sigma rules evaluated on the security feed's stream.

- :mod:`~vigil.flows.security.sigma.config`: the ``security.sigma`` section;
- :mod:`~vigil.flows.security.sigma.pipelines`: the Sigma taxonomy per log source (one
  pySigma processing pipeline each) and the field getters;
- :mod:`~vigil.flows.security.sigma.compiler`: a rule's condition as a Python predicate;
- :mod:`~vigil.flows.security.sigma.engine`: loading, selection, matching, detections.

Nothing is imported here, so reading the configuration does not load pySigma.
"""
