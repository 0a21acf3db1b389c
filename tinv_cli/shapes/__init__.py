"""The shapes world and the small text-to-image model trained on it, shipped as ``builtin:shapes``.

``world`` draws the images and captions, ``build`` trains the pipeline and the judge from scratch, ``judge``
tells which colour, shape and background an image shows, and ``model`` finds the shipped weights.
"""
