"""Our method (the paper's): a personalized basis in EG3D's W+ space driven by RGB, 3DMM or audio.

- :mod:`~persona.ours.basis`    the basis ``B``, its offset, the orthogonality modes
- :mod:`~persona.ours.encoders` signal -> alpha [B,k] (RGB frame, 76-d expression, audio windows)
- :mod:`~persona.ours.model`    :class:`~persona.ours.model.PersonalizedPrior`: encoder + basis + generator
- :mod:`~persona.ours.train`    the two-stage trainer (:class:`~persona.ours.train.TrainConfig`, :func:`~persona.ours.train.fit_prior`)
- :mod:`~persona.ours.method`   the :class:`persona.methods.Method` wrapper (:class:`~persona.ours.method.OursMethod`)
"""
