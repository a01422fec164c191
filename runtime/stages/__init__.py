"""Executors for the stages of a bundle: engines (GPU or ONNX Runtime) and residual MXNet graphs.

Every stage has ``name``, ``inputs`` and ``outputs`` (tensor names) and
``run(feeds: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]``.
"""
