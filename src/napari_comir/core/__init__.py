"""Pure numpy/torch core of napari-comir: no Qt, no napari imports anywhere below here."""
