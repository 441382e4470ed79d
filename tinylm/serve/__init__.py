"""`tinylm serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) whose concurrent
requests share each decoding step. `scheduler.py` batches, `app.py` routes, `schemas.py`
validates, `server.py` loads and runs, `cli.py` registers the subcommand."""
