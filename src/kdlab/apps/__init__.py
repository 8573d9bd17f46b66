"""What a finished run is used for: prediction on new inputs (:mod:`~kdlab.apps.predict`, also
:func:`kdlab.load_run`) and export (:mod:`~kdlab.apps.export`)."""
