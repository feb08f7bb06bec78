"""Call flows: one module per phone conversation, written as the conversation it implements."""
