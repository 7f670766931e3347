"""Why an fp32 / fp16 artifact computes something else: the first diverging op along the chain, a reduced standalone
reproducer, cached with the artifact (docs/divergence.md).

- ``graph``: ONNX Runtime reference intermediates, sub-models cut out of a graph, an op in words;
- ``standalone``: convert + run one ONNX file on a backend (the body of every ``repro.py``); ``probe_worker`` serves
  it in the backend's interpreter; ``probes``: one probe per backend (onnx2tf, onnx-tf, ONNX Runtime fp16);
- ``finder``: bisection for the first diverging node; ``reduce``: the smallest sub-graph that still diverges;
- ``reproducer``: the reproducer directory and its ``ISSUE.md``; ``explain``: a cell explained, cached;
- ``table``: ``docs/results/miscompiles.md`` over the declared failing fp32 / fp16 parity cells (written by
  ``export-harness diverge --table PATH``: the session is built a layer above, in ``converters.cli``).

The pytest plugin calls :func:`explain.divergence_line` (one line, never raises) or :func:`explain.explain_failure`.
"""

from __future__ import annotations
