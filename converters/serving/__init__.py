"""Serving handlers of guide 000 (BST export and cloud deployment): one JSON contract, one handler per runtime.

- :mod:`export_harness.converters.serving.contract`: the request parser/validator and the response builder every
handler shares;
- :mod:`export_harness.converters.serving.handlers`: the torch, ONNX Runtime and TFLite handlers, and the Cloud
Functions
  (functions-framework / flask) and AWS Lambda (API Gateway event) adapters;
- :mod:`export_harness.converters.serving.main`: deployable entry points configured by environment variables
  (``functions-framework --source=converters/serving/main.py --target=predict_badminton_shot``).

See ``docs/serving.md``.
"""
