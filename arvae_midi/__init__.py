"""arvae-midi: controllable one-bar melody variations from Attribute-Regularized VAEs.

``arvae_midi.core`` holds the measure grid, vocabulary and attributes (numpy only);
``arvae_midi.train`` the torch models, datasets and metrics; ``arvae_midi.export`` the ONNX
exporter and onnxruntime engine; ``arvae_midi.midi_bridge`` the realtime bridge behind
``arvae-midi serve``.
"""

__version__ = "0.1.0"
