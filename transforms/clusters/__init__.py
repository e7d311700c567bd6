"""Stage 8, clusters: connected components of the matched pairs, and their output files.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
