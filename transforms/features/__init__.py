"""Stage 2, features: tf.Transform preprocessing, text normalisation, embedding (the default embedder
and the user's own models).

Heavy: the modules that need TensorFlow import it (see tests/test_layering.py for the deferred ones).
"""
