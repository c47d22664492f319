"""Building blocks of the LLM agent (:class:`buttermilk.agents.llm.LLM`).

- :mod:`.config`: the agent's options, validated.
- :mod:`.clients`: one OpenAI client per event loop, closed with its loop.
- :mod:`.prompts`: Jinja2 prompt templates that see ``record``, ``outputs``, ``parameters``.
- :mod:`.schema`: parse a model's answer as JSON and validate it against a schema.
- :mod:`.retry`: which endpoint errors are worth retrying, and how long to wait.
- :mod:`.limits`: seams shared across agents (rate limits, a response cache), with
  in-process implementations.
- :mod:`.shared`: the same seams kept in the batch store, for every worker and batch.
- :mod:`.usage`: token estimates and cost.
- :mod:`.estimate`: what a batch would send to its LLM agents (``batch.command=estimate``).
"""
