"""The torch-free runtime: model-file metadata, knob calibration and the onnxruntime :class:`Engine`.

Importing this package never loads torch, so ``vary`` and ``serve`` start fast on a machine
without it (``tests/engine/test_engine.py`` checks ``sys.modules`` in a subprocess).
"""
