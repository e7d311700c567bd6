"""Generic pieces every stage shares: element types, errors, dead letters, metrics, progress, file helpers.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
