"""smolconv: SmolVLM2 checkpoints → GGUF → Ollama vision models sized for an 8 GB GPU."""

__version__ = "0.1.0"
