"""Bridges from dmax's decoders to other tools (lm-evaluation-harness: `dmax_core.integrations.lm_eval`).

Nothing is imported here, so `import dmax_core` never pulls in a tool that only an integration needs."""
