"""Stage 7, quality: exact ground truth on a query sample, the recall audit, and search/probe tuning.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
