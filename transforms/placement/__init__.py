"""Stage 3, placement: shard sizing, duplicate ids, centroid routing, placing candidates on shards,
exact duplicates and spilling large pieces to files.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
