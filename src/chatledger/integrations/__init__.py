"""Other stacks' interfaces over chatledger's store: one conversation, visible through all.

- `chatledger.integrations.items`: OpenAI Responses items <-> messages (no SDK needed).
- `chatledger.integrations.agents`: `ChatLedgerSession`, an OpenAI Agents SDK `Session`
  (needs the `agents` extra).
"""
