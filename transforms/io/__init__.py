"""Stage 1, read and write: one module per file format, ReadCorpus, validation, WriteMatches, and
``results`` (the one reader of a run's outputs).

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
