"""``lmforge serve``: task endpoints and an OpenAI-compatible API over the runs lmforge trains.

Layout (after vLLM's entrypoints and FastAPI's "bigger applications"):

- ``app``: the ``create_app`` factory, wiring the parts below and nothing else;
- ``routers``: one thin router per endpoint group (``tasks``, ``openai``, ``admin``);
- ``protocol``: the pydantic request and response models;
- ``services``: what each route asks of the served models, with no HTTP in it; refusals are the
  exceptions in ``errors``, which ``http_errors`` turns into OpenAI error bodies;
- ``state``: the settings, models and metrics the app holds, loaded at start-up;
- ``middleware``: metrics and the log line, drain, API key, JSON body limits;
- ``batching`` and ``engine``: the workers that batch encoder inputs and decode generation rows
  (``kv_cache`` lets rows join and leave a running batch), all model calls on one ``compute``
  thread; ``precision`` picks the encoders' float type;
- ``server``: the uvicorn runner, with a graceful drain on SIGTERM.
"""
