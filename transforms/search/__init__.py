"""Stage 5, search: search the shard indexes, merge per-query top-K and rescore.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
