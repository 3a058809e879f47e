"""LLM backends for SynTOD response simulation and judging, behind one interface.

- :mod:`.base`: the interface (``Backend``: ``chat``, ``cache_identity``, ``describe``,
  ``mask``) and its errors.
- :mod:`.http`: ``OpenAIChatBackend``, any OpenAI-compatible ``/chat/completions`` endpoint
  (OpenAI, vLLM, Ollama's ``/v1``) with bounded, testable retries; secrets only from the
  environment and masked in every message.
- :mod:`.local`: ``TransformersBackend``, a local causal LM directory.
- :mod:`.simulator`: ``OfflineSimulator``, a deterministic template simulator (NOT a language
  model; the mini default, reports must name it as such).
- :mod:`.replies`: ``chat_json``, JSON replies by local repair, then bounded re-asks.
- :mod:`.spec`: the params keys each backend kind takes and ``make_backend``, which builds a
  backend (cached, see :mod:`irrepro.syntod.cache`) from a params spec.
"""

from .base import DEFAULT_SAMPLING, ROLES, Backend, JSONReplyError, LLMError, LLMHTTPError, check_messages
from .http import DEFAULT_OPENAI_URL, OpenAIChatBackend, public_url, reply_usage
from .local import TransformersBackend, build_prompt
from .replies import chat_json, parse_reply, repair_json
from .simulator import OfflineSimulator, user_templates
from .spec import BACKEND_KINDS, FORBIDDEN_KEYS, SPEC_KEYS, all_spec_keys, kind_keys, make_backend, select_spec

__all__ = [
    "BACKEND_KINDS", "DEFAULT_OPENAI_URL", "DEFAULT_SAMPLING", "FORBIDDEN_KEYS", "ROLES", "SPEC_KEYS",
    "Backend", "JSONReplyError", "LLMError", "LLMHTTPError", "OfflineSimulator",
    "OpenAIChatBackend", "TransformersBackend", "all_spec_keys", "build_prompt", "chat_json",
    "check_messages", "kind_keys", "make_backend", "parse_reply", "public_url", "repair_json", "reply_usage",
    "select_spec", "user_templates",
]
