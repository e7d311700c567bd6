"""Beam transforms of corpus-matcher: one module per pipeline stage (see shared/STYLE.md).

Importing this package pins which Keras ``tf.keras`` means, before anything can import TensorFlow.
``tensorflow_transform`` sets ``TF_USE_LEGACY_KERAS=1`` only when it is unset, so without this line
``tf.keras`` would be Keras 3 or Keras 2 depending on whether some module happened to import TFT first,
and Beam workers would inherit whatever the launcher ended up with. We pick ``1`` (``tf.keras`` is
``tf_keras``, Keras 2) because:

* tf.Transform 1.21 supports only Keras 2 (it warns otherwise and builds its Keras layers on
  ``tf_keras``), and it is the one library here that cares;
* nothing in this project needs ``tf.keras`` to be Keras 3: models are exported as SavedModels
  (``model.export()`` from ``keras`` 3 or from ``tf_keras``, or ``tf.saved_model.save``) and served
  with ``tf.saved_model.load``, which does not involve Keras at all; ``import keras`` still gives
  Keras 3 to anyone who wants it.

``setdefault`` keeps an explicit choice from the environment. This module imports nothing heavy.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
