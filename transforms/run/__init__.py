"""Stage 9, the run's record: the manifest, the HTML report and its plots.

Light: nothing here imports TensorFlow, tf.Transform or ScaNN.
"""
