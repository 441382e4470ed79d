"""`tinylm run`: the whole loop of the model cards as one resumable command."""
