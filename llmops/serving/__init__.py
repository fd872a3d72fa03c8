"""The data plane: the OpenAI-compatible gateway in front of vLLM, and the drift and anomaly monitors."""
