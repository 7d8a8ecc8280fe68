"""``lmforge serve``: task endpoints and an OpenAI-compatible API over the runs lmforge trains.

Layout (after vLLM's entrypoints and FastAPI's "bigger applications"): ``protocol`` holds the
pydantic request/response models, ``services`` the model-facing code with no HTTP in it
(``batching`` and ``engine`` run the models on worker threads), ``guard`` the ASGI middleware
(auth, limits, drain, metrics, logs), ``app`` the ``create_app`` factory and its thin routes, and
``server`` the uvicorn runner with a graceful drain on SIGTERM.
"""
