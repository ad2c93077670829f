"""The Holdfast sidecar: an OpenAI-compatible proxy on 127.0.0.1 in front of one agent."""
