"""Small models of the user's own, built from code with fixed seeded weights (nothing downloaded).

* :func:`text_model`: Keras 3, ``tf.string`` [batch] -> character TextVectorization (a fixed
  vocabulary) -> masked embedding -> mean -> dense: 16 float dims.
* :func:`image_model`: Keras 3 CNN, [batch, 16, 16, 3] float32 pixels in [0, 255] -> rescaling ->
  conv -> global mean -> dense: 8 float dims.
* :func:`encoded_image_model`: a tf.Module whose signature takes encoded PNG/JPEG bytes (tf.string),
  decodes and resizes them itself, and returns per-channel means and a fixed projection.

Weights are drawn from ``numpy.random.default_rng(seed)`` and set explicitly, so they do not depend
on Keras' initialisers or global seeds.
"""

from __future__ import annotations

import string

import numpy as np

VOCABULARY = list(string.ascii_lowercase + string.digits) + [" "]
TEXT_DIMS = 16
IMAGE_SHAPE = (16, 16, 3)
IMAGE_DIMS = 8


def _set_seeded_weights(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights and not layer.__class__.__name__ == "TextVectorization":
            layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype(w.dtype) for w in weights])


def text_model(seed: int = 0):
    """The Keras string-input model (see the module docstring)."""
    import keras

    vectorize = keras.layers.TextVectorization(
        standardize="lower_and_strip_punctuation", split="character", output_mode="int",
        output_sequence_length=24, vocabulary=VOCABULARY, name="chars")
    text = keras.Input(shape=(), dtype="string", name="text")
    x = vectorize(text)
    x = keras.layers.Embedding(len(VOCABULARY) + 2, 24, mask_zero=True, name="embed")(x)
    x = keras.layers.GlobalAveragePooling1D(name="mean")(x)
    x = keras.layers.Dense(TEXT_DIMS, name="project")(x)
    model = keras.Model(text, x, name="text_encoder")
    _set_seeded_weights(model, seed)
    return model


def image_model(seed: int = 1):
    """The Keras CNN (see the module docstring)."""
    import keras

    pixels = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(pixels)
    x = keras.layers.Conv2D(6, 3, activation="tanh", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(IMAGE_DIMS, name="project")(x)
    model = keras.Model(pixels, x, name="image_encoder")
    _set_seeded_weights(model, seed)
    return model


def export_encoded_image_model(path: str, seed: int = 2) -> str:
    """A SavedModel taking encoded images (tf.string [batch]) that decodes them itself."""
    import tensorflow as tf

    projection = np.random.default_rng(seed).normal(size=(3, IMAGE_DIMS)).astype(np.float32)

    class _Encoded(tf.Module):
        def __init__(self):
            super().__init__()
            self.projection = tf.Variable(projection)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            def one(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                return tf.reduce_mean(tf.cast(image, tf.float32), axis=[0, 1]) / 255.0
            means = tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)
            return {"embedding": tf.matmul(means, self.projection) + 0.1}

    module = _Encoded()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def random_images(n: int, seed: int, sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """``n`` seeded uint8 RGB images, 16x16 unless ``sizes`` says otherwise (cycled)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [IMAGE_SHAPE[:2]]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        base = rng.integers(0, 256, 3)  # a colour per image, plus texture: distinct embeddings
        noise = rng.integers(-60, 61, (h, w, 3))
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return out


def encode_png(image: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()
