"""The services: what each route asks of the served models, with no HTTP in here.

``served_models`` holds the model kinds and ``open_models`` (sources -> served models, checked but
not loaded); ``tasks`` and ``completions`` the services of the task and OpenAI-compatible routes;
``inputs`` the request limits they share. A refusal is one of the exceptions in
``lmforge.serving.errors``.
"""

from lmforge.serving.services.served_models import ServedModel, open_models

__all__ = ["ServedModel", "open_models"]
