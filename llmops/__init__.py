"""llmops: the whole life of a large language model on Kubernetes."""
